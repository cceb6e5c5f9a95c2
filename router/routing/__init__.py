"""Which upstream answers: candidate lists from the route table, ordered by strategy and state."""
