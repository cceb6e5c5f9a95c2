"""Provider secrets: a wrapper that never prints itself, and a scrubber.

Keys come from the environment (``${FORII_API_KEY}`` in routes.yaml).  They
are held as ``Secret`` so that a repr, a log record or a config dump shows
``'***'``; the real value is read only where the transport sets the upstream
auth header.  ``scrub`` removes known secrets from any text that came back
from a provider before it is shown to a client or logged (OpenAI-style APIs
echo part of a wrong key in their error message).
"""

from __future__ import annotations

import re
from collections.abc import Iterable


class Secret:
    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)


# Anything that looks like a bearer credential is masked too, not only the
# keys we know: an upstream may echo a key of a different account.
_TOKEN_LIKE = re.compile(r"\b(sk|pk|rk|key|api|ff|fk|ia|fo)[-_][A-Za-z0-9_\-]{12,}\b")


def scrub(text: str, secrets: Iterable[Secret]) -> str:
    for secret in secrets:
        value = secret.reveal()
        if value and len(value) >= 4:
            text = text.replace(value, "***")
            # Providers often echo a prefix and suffix of a wrong key.
            if len(value) >= 12:
                text = text.replace(value[:8], "***").replace(value[-6:], "***")
    return _TOKEN_LIKE.sub("***", text)
