"""Virtual keys and teams: how a key is made, how it is hashed, what a record holds.

A client key is ``sk-llmr-`` followed by 43 base62-ish characters (32 random
bytes).  Only ``hash_key(key, pepper)`` is ever stored: HMAC-SHA256 keyed
with the server-side pepper (``ROUTER_KEY_PEPPER``; empty if unset).  The
keys we mint carry 256 bits of entropy, so the hash alone resists guessing;
the pepper adds protection for weak keys declared by hand in routes.yaml and
makes a stolen store dump useless without the gateway's environment.

Records are immutable; a change (revoke, rotate) writes a new record.
``to_json``/``from_json`` are the one storage format, shared by the memory
and Redis stores.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from router.schema import Limits

KEY_PREFIX = "sk-llmr-"
PERIODS = ("day", "week", "month", "total")


def generate_key() -> str:
    return KEY_PREFIX + base64.urlsafe_b64encode(os.urandom(32)).rstrip(b"=").decode()


def new_key_id() -> str:
    return "key_" + os.urandom(8).hex()


def hash_key(key: str, pepper: str) -> str:
    return hmac.new(pepper.encode(), key.encode(), hashlib.sha256).hexdigest()


def key_hint(key: str) -> str:
    """Enough to tell keys apart in a listing, far too little to use one."""
    return f"{key[: len(KEY_PREFIX)]}...{key[-4:]}" if key.startswith(KEY_PREFIX) else f"...{key[-4:]}"


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The client's key from ``Authorization: Bearer``, ``api-key`` or ``x-api-key``; None if absent or malformed."""
    auth = headers.get("Authorization")
    if auth is not None:
        scheme, _, value = auth.strip().partition(" ")
        value = value.strip()
        return value if scheme.lower() == "bearer" and _plausible(value) else None
    for name in ("api-key", "x-api-key"):
        raw = headers.get(name)
        if raw is not None:
            return raw.strip() if _plausible(raw.strip()) else None
    return None


def _plausible(value: str) -> bool:
    return 8 <= len(value) <= 256 and value.isprintable() and " " not in value


@dataclass(frozen=True, slots=True)
class Budget:
    """At most ``limit_micro_usd`` per ``period`` (calendar periods in UTC; ``total`` never resets)."""

    limit_micro_usd: int
    period: str = "month"

    def to_json(self) -> dict[str, Any]:
        return {"usd": str(self.limit_micro_usd / 1_000_000), "limit_micro_usd": self.limit_micro_usd, "period": self.period}


@dataclass(frozen=True, slots=True)
class Team:
    name: str
    aliases: frozenset[str] | None = None  # None: every alias
    limits: Limits | None = None
    budget: Budget | None = None
    metadata: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    source: str = "admin"  # "config": declared in routes.yaml, read-only through the API
    created_at: float = field(default_factory=time.time)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "aliases": sorted(self.aliases) if self.aliases is not None else None,
            "limits": _limits_json(self.limits),
            "budget": self.budget.to_json() if self.budget else None,
            "metadata": dict(self.metadata),
            "source": self.source,
            "created_at": self.created_at,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Team:
        return cls(
            name=data["name"],
            aliases=_aliases_from(data.get("aliases")),
            limits=_limits_from(data.get("limits")),
            budget=_budget_from(data.get("budget")),
            metadata=MappingProxyType(dict(data.get("metadata") or {})),
            source=data.get("source", "admin"),
            created_at=float(data.get("created_at", 0.0)),
        )


@dataclass(frozen=True, slots=True)
class VirtualKey:
    id: str
    key_hash: str
    name: str = ""
    team: str | None = None
    user: str | None = None
    aliases: frozenset[str] | None = None  # None: every alias (the team may still narrow it)
    limits: Limits | None = None
    budget: Budget | None = None
    expires_at: float | None = None  # unix seconds
    metadata: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    hint: str = ""
    revoked: bool = False
    source: str = "admin"
    created_at: float = field(default_factory=time.time)

    def expired(self, now: float | None = None) -> bool:
        return self.expires_at is not None and (now if now is not None else time.time()) >= self.expires_at

    def revoke(self) -> VirtualKey:
        return replace(self, revoked=True)

    def public(self) -> dict[str, Any]:
        """What the admin API shows: everything except the hash (and the key, which we never had)."""
        data = self.to_json()
        del data["key_hash"]
        return data

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "key_hash": self.key_hash,
            "name": self.name,
            "team": self.team,
            "user": self.user,
            "aliases": sorted(self.aliases) if self.aliases is not None else None,
            "limits": _limits_json(self.limits),
            "budget": self.budget.to_json() if self.budget else None,
            "expires_at": self.expires_at,
            "metadata": dict(self.metadata),
            "hint": self.hint,
            "revoked": self.revoked,
            "source": self.source,
            "created_at": self.created_at,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> VirtualKey:
        return cls(
            id=data["id"],
            key_hash=data["key_hash"],
            name=data.get("name", ""),
            team=data.get("team"),
            user=data.get("user"),
            aliases=_aliases_from(data.get("aliases")),
            limits=_limits_from(data.get("limits")),
            budget=_budget_from(data.get("budget")),
            expires_at=data.get("expires_at"),
            metadata=MappingProxyType(dict(data.get("metadata") or {})),
            hint=data.get("hint", ""),
            revoked=bool(data.get("revoked", False)),
            source=data.get("source", "admin"),
            created_at=float(data.get("created_at", 0.0)),
        )


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the key, and its team if it has one."""

    key: VirtualKey
    team: Team | None

    def may_use(self, names: tuple[str, ...]) -> bool:
        """True if any of ``names`` (the requested name, the alias it resolved to) is allowed by key and team."""
        for allowed in (self.key.aliases, self.team.aliases if self.team else None):
            if allowed is not None and not any(name in allowed for name in names):
                return False
        return True

    @property
    def metadata(self) -> dict[str, str]:
        """Default tags for cost attribution: the team's, overridden by the key's."""
        return {**(self.team.metadata if self.team else {}), **self.key.metadata}


def _limits_json(limits: Limits | None) -> dict[str, int | None] | None:
    return {"rpm": limits.rpm, "tpm": limits.tpm, "concurrency": limits.concurrency} if limits else None


def _limits_from(data: Any) -> Limits | None:
    return Limits(rpm=data.get("rpm"), tpm=data.get("tpm"), concurrency=data.get("concurrency")) if data else None


def _budget_from(data: Any) -> Budget | None:
    return Budget(int(data["limit_micro_usd"]), data.get("period", "month")) if data else None


def _aliases_from(data: Any) -> frozenset[str] | None:
    return frozenset(data) if data is not None else None
