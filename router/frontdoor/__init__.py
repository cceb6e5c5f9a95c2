"""Front doors: client APIs other than OpenAI's, translated to and from the gateway's OpenAI shape.

Each module here is pure (JSON in, JSON or SSE bytes out) and imports
nothing from the request path, which calls it: ``anthropic`` is the
Messages API (``POST /v1/messages``).
"""
