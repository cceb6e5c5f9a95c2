"""Provider secrets: a wrapper that never prints itself, and a scrubber.

Keys come from the environment (``${FORII_API_KEY}`` in routes.yaml).  They
are held as ``Secret`` so that a repr, a log record or a config dump shows
``'***'``; the real value is read only where the transport sets the upstream
auth header.  ``scrub`` removes known secrets from any text that came back
from a provider before it is shown to a client or logged (OpenAI-style APIs
echo a wrong key in their error message), and ``scrub_value`` does the same
for every string of a JSON value (an upstream error body, an SSE error event).

What is replaced by ``***``, and nothing else:

- each known secret, whole, as is (so ``Bearer <key>`` becomes ``Bearer ***``),
  JSON-escaped, URL-encoded (upper- or lower-case hex, ``+`` for a space),
  and as base64 or base64url (with or without padding);
- any whole token shaped like a credential (``sk-`` + 12 or more key
  characters, and the other prefixes in ``_TOKEN_LIKE``), so that an upstream
  echoing the key of another account is masked too.

Never a fragment of a secret: replacing every 8-character prefix erased
innocent text (a pepper starting ``acc-rel-`` blanked file paths in logs).
All of it is one compiled regex per set of secrets, cached, so a string
with no secret in it costs one regex search.
"""

from __future__ import annotations

import base64
import functools
import re
import urllib.parse
from collections.abc import Iterable
from typing import Any

import orjson


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
_TOKEN_LIKE = r"\b(?:sk|pk|rk|key|api|ff|fk|ia|fo)[-_][A-Za-z0-9_\-]{12,}\b"
_MIN_SECRET = 4  # shorter values would blank ordinary words
MASK = "***"


def encodings(value: str) -> set[str]:
    """The forms a secret takes when an upstream or a library quotes it."""
    raw = value.encode()
    forms = {
        value,
        orjson.dumps(value).decode()[1:-1],
        urllib.parse.quote(value, safe=""),
        urllib.parse.quote_plus(value, safe=""),
    }
    forms |= {re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), f) for f in list(forms)}
    for b64 in (base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode()):
        forms |= {b64, b64.rstrip("=")}
    return {f for f in forms if len(f) >= _MIN_SECRET}


@functools.lru_cache(maxsize=64)
def _pattern(secrets: tuple[Secret, ...]) -> re.Pattern[str]:
    forms: set[str] = set()
    for secret in secrets:
        value = secret.reveal()
        if len(value) >= _MIN_SECRET:
            forms |= encodings(value)
    return re.compile(f"{_trie_regex(forms)}|{_TOKEN_LIKE}" if forms else _TOKEN_LIKE)


def _trie_regex(words: set[str]) -> str:
    """One regex for many literals, shaped as a prefix tree.

    A flat alternation makes the regex engine try every literal at every
    position (300 µs a line for 200 literals); a tree tries one branch per
    character (15 µs).  Optional tails are greedy, so the longest literal wins.
    """
    trie: dict[str, Any] = {}
    for word in words:
        node = trie
        for ch in word:
            node = node.setdefault(ch, {})
        node[""] = {}

    def build(node: dict[str, Any]) -> str:
        # A run of single-child nodes is one literal: recursion only at forks,
        # so a 2,000-character key does not hit the recursion limit.
        run = []
        while len(node) == 1 and "" not in node:
            ((ch, node),) = node.items()
            run.append(ch)
        prefix = re.escape("".join(run))
        branches = [re.escape(ch) + build(node[ch]) for ch in sorted(k for k in node if k)]
        if not branches:
            return prefix
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        return prefix + (f"(?:{body})?" if "" in node else body)

    return build(trie)


def _as_tuple(secrets: Iterable[Secret]) -> tuple[Secret, ...]:
    return secrets if isinstance(secrets, tuple) else tuple(secrets)


def scrub(text: str, secrets: Iterable[Secret]) -> str:
    """``text`` with every known secret (in any of its encodings) and every key-shaped token replaced by ``***``."""
    return _pattern(_as_tuple(secrets)).sub(MASK, text)


def scrub_value(value: Any, secrets: Iterable[Secret]) -> Any:
    """A copy of a JSON value (dicts, lists, strings; keys too) with every string scrubbed.

    Numbers, booleans and ``None`` are returned as they are.
    """
    return _scrub_value(value, _pattern(_as_tuple(secrets)))


def _scrub_value(value: Any, pattern: re.Pattern[str]) -> Any:
    if isinstance(value, str):
        return pattern.sub(MASK, value)
    if isinstance(value, dict):
        return {_scrub_value(k, pattern): _scrub_value(v, pattern) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_scrub_value(v, pattern) for v in value]
    return value
