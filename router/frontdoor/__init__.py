"""Front doors: the client APIs other than OpenAI's own (Responses, Anthropic Messages), mapped onto the one chat pipeline.

``doors.py`` says how each maps (body in, answer, stream events and errors out); ``responses.py`` and
``anthropic.py`` are the pure translators, JSON in and JSON out.
"""
