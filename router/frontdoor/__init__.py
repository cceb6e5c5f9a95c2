"""Front doors: other APIs clients speak (Responses, Anthropic Messages), translated onto the gateway's chat path."""
