"""The ``auth:`` section of routes.yaml, and the bodies of admin API calls, validated with paths.

    auth:
      enabled: true                 # false only for local development (loopback only)
      allow_remote_without_auth: false
      public_paths: [/healthz, /readyz, /metrics]
      cache_ttl: 0.5                # seconds a replica trusts its cached view of a key (revocation bound)
      default_max_output_tokens: 4096   # output bound for budgets when neither request nor target sets one
      failure_threshold: 10         # failed attempts per address per minute before responses slow down
      teams:
        platform: {aliases: [chat], limits: {rpm: 600}, budget: {usd: 100, period: month}, metadata: {cost_center: "42"}}
      keys:
        ci-bot:
          key: ${CI_BOT_KEY}        # or hash: <hex of HMAC-SHA256(pepper, key)>, from `llm-router keys hash`
          team: platform
          user: alice
          aliases: [chat]
          limits: {rpm: 60, tpm: 100000, concurrency: 4}
          budget: {usd: 5, period: day}
          expires_at: 2027-01-01T00:00:00Z
          metadata: {project: ci}

The same field readers check admin API bodies, so a mistake there is named
the same way (``budget.period``).  The pepper comes from ``ROUTER_KEY_PEPPER``
in the environment, never from the file.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from types import MappingProxyType
from typing import Any

from router.auth.keys import PERIODS, Budget, Team, VirtualKey, hash_key, key_hint
from router.schema import Limits, Reader, keys_of, object_schema, read_fields, read_section, setting
from router.secrets import Secret

DEFAULT_PUBLIC_PATHS = ("/healthz", "/readyz", "/metrics")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def _public_paths(r: Reader, value: Any, path: str) -> frozenset[str]:
    if not isinstance(value, list) or not all(isinstance(p, str) and p.startswith("/") for p in value):
        r.fail(path, "must be a list of paths starting with '/'")
        return frozenset(DEFAULT_PUBLIC_PATHS)
    if any(p.startswith("/admin") for p in value):
        r.fail(path, "/admin paths are always protected by ROUTER_ADMIN_TOKEN and cannot be public")
    return frozenset(value)


def _limits(r: Reader, value: Any, path: str) -> Limits | None:
    return None if value is None else read_section(r, Limits, value, path)


@dataclass(frozen=True)
class AuthSettings:
    enabled: bool = setting("false only for local development: the gateway then listens on loopback only", True)
    allow_remote_without_auth: bool = setting("with auth off, listen beyond loopback anyway (a network boundary protects it)", False)
    public_paths: frozenset[str] = setting(
        "paths served without a key (never /admin)",
        frozenset(DEFAULT_PUBLIC_PATHS),
        read=_public_paths,
        schema={"type": "array", "items": {"type": "string", "pattern": "^/"}},
    )
    cache_ttl: float = setting(
        "seconds a replica trusts its cached view of a key (the revocation bound)", 0.5, maximum=1.0, hint="a revoked key must stop everywhere within a second"
    )
    default_max_output_tokens: int = setting("output bound for budgets when neither request nor target sets one", 4096, minimum=1)
    failure_threshold: int = setting("failed attempts per address per minute before responses slow down", 10, minimum=1)
    pepper: Secret = field(default_factory=lambda: Secret(""))  # ROUTER_KEY_PEPPER, never the file
    # Declared in routes.yaml; admin-created ones live in the store.
    teams: Mapping[str, Team] = setting(
        "name -> a team", factory=lambda: MappingProxyType({}), schema=lambda: _named(object_schema(TeamEntry, exclude=("name",)))
    )
    keys_by_hash: Mapping[str, VirtualKey] = setting(
        "name -> a client key declared here (read-only through the admin API)",
        factory=lambda: MappingProxyType({}),
        key="keys",
        schema=lambda: _named({**object_schema(ConfigKeyEntry), "oneOf": [{"required": ["key"]}, {"required": ["hash"]}]}),
    )

    def secrets(self) -> list[Secret]:
        return [self.pepper] if self.pepper else []


def _named(entry: dict[str, Any]) -> dict[str, Any]:
    return {"type": ["object", "null"], "propertyNames": {"pattern": _NAME.pattern}, "additionalProperties": entry}


def json_schema() -> dict[str, Any]:
    """The JSON Schema of the ``auth:`` section."""
    return object_schema(AuthSettings)


def check_name(r: Reader, value: Any, path: str, *, required: bool = True) -> str | None:
    name = r.string(value, path, required=required)
    if name is not None and not _NAME.match(name):
        r.fail(path, f"{name!r} is not a valid name: use letters, digits, '.', '_' or '-', at most 64 characters")
        return None
    return name


def _aliases(r: Reader, value: Any, path: str) -> frozenset[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(a, str) and a for a in value):
        r.fail(path, "must be a list of alias names (omit it to allow every alias)")
        return None
    return frozenset(value)


def _budget(r: Reader, value: Any, path: str) -> Budget | None:
    if value is None:
        return None
    data = r.mapping(value, path, ("usd", "period"))
    usd = data.get("usd")
    period = r.string(data.get("period"), f"{path}.period", default="month") or "month"
    if period not in PERIODS:
        r.fail(f"{path}.period", f"unknown period {period!r}; expected one of: {', '.join(PERIODS)}")
    if usd is None:
        r.fail(f"{path}.usd", "is required (the budget in US dollars per period)")
        return None
    try:
        if isinstance(usd, bool) or not isinstance(usd, (int, float, str)):
            raise InvalidOperation
        micro = Decimal(str(usd)) * 1_000_000  # str() first: YAML 0.1 must be exactly 0.1
    except InvalidOperation:
        r.fail(f"{path}.usd", f"must be an amount in US dollars, got {usd!r}")
        return None
    if not micro.is_finite() or micro < 0 or micro != micro.to_integral_value():
        r.fail(f"{path}.usd", f"must be a non-negative amount with at most 6 decimals, got {usd!r}")
        return None
    return Budget(int(micro), period)


def _metadata(r: Reader, value: Any, path: str) -> Mapping[str, str]:
    data = r.mapping(value, path)
    out: dict[str, str] = {}
    for k, v in data.items():
        if isinstance(v, bool) or not isinstance(v, (str, int, float)):
            r.fail(f"{path}.{k}", "must be a string")
            continue
        out[str(k)] = str(v)
    return MappingProxyType(out)


def _expiry(r: Reader, value: Any, path: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, datetime):  # YAML reads an unquoted timestamp as one
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC).timestamp()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()
    r.fail(path, f"must be an ISO 8601 time like 2027-01-01T00:00:00Z or unix seconds, got {value!r}")
    return None


_ALIASES_SCHEMA = {"type": "array", "items": {"type": "string", "minLength": 1}}
_BUDGET_SCHEMA = {
    "type": "object",
    "properties": {
        "usd": {"description": "the budget in US dollars per period (at most 6 decimals)", "type": ["number", "string"], "minimum": 0},
        "period": {"description": "calendar period in UTC; total never resets", "enum": list(PERIODS), "default": "month"},
    },
    "required": ["usd"],
    "additionalProperties": False,
}


def _team_name(r: Reader, value: Any, path: str) -> str | None:
    return check_name(r, value, path, required=False)


def _optional_string(r: Reader, value: Any, path: str) -> str | None:
    return r.string(value, path)


def _metadata_setting() -> Any:
    """A team's and a key's ``metadata``: the same field, declared once."""
    return setting(
        "labels copied onto every usage record",
        factory=lambda: MappingProxyType({}),
        read=_metadata,
        schema={"type": ["object", "null"], "additionalProperties": {"type": ["string", "number"]}},
    )


@dataclass(frozen=True, slots=True)
class TeamEntry:
    """A team as routes.yaml (auth.teams.<name>) and POST /admin/teams write it: a declaration only (the record is keys.Team)."""

    name: str = setting("the team's name (in routes.yaml, the mapping key)", "", schema={"type": "string", "pattern": _NAME.pattern})
    aliases: frozenset[str] | None = setting("aliases its keys may call; omit it to allow every alias", None, read=_aliases, schema=_ALIASES_SCHEMA)
    limits: Limits | None = setting("rpm, tpm and concurrency shared by the team's keys", None, read=_limits, schema=lambda: object_schema(Limits))
    budget: Budget | None = setting("USD per period for the whole team", None, read=_budget, schema=_BUDGET_SCHEMA)
    metadata: Mapping[str, str] = _metadata_setting()


@dataclass(frozen=True, slots=True)
class KeyEntry:
    """A client key as POST /admin/keys writes it: a declaration only (the record is keys.VirtualKey)."""

    name: str = setting("a label for people", "")
    team: str | None = setting("the team it belongs to", None, read=_team_name, schema={"type": ["string", "null"], "pattern": _NAME.pattern})
    user: str | None = setting("the user it is for, on every usage record", None, read=_optional_string, schema={"type": ["string", "number", "null"]})
    aliases: frozenset[str] | None = setting("aliases it may call; omit it to allow every alias", None, read=_aliases, schema=_ALIASES_SCHEMA)
    limits: Limits | None = setting("rpm, tpm and concurrency for this key", None, read=_limits, schema=lambda: object_schema(Limits))
    budget: Budget | None = setting("USD per period for this key", None, read=_budget, schema=_BUDGET_SCHEMA)
    expires_at: float | None = setting(
        "ISO 8601 time like 2027-01-01T00:00:00Z, or unix seconds", None, read=_expiry, schema={"type": ["string", "number", "null"]}
    )
    metadata: Mapping[str, str] = _metadata_setting()


@dataclass(frozen=True, slots=True)
class ConfigKeyEntry(KeyEntry):
    """A client key declared in routes.yaml (auth.keys.<name>): exactly one of key or hash."""

    key: str | None = setting("the key itself, from the environment: ${CI_BOT_KEY} (at least 16 characters)", None, schema={"type": ["string", "null"]})
    hash: str | None = setting(
        "HMAC-SHA256(pepper, key) in hex, from `llm-router keys hash`", None, schema={"type": ["string", "null"], "pattern": "^[0-9a-f]{64}$"}
    )


TEAM_FIELDS = keys_of(TeamEntry)
KEY_FIELDS = keys_of(KeyEntry)
CONFIG_KEY_FIELDS = keys_of(ConfigKeyEntry)


def parse_team(r: Reader, name: str, data: dict[str, Any], path: str, source: str) -> Team:
    return Team(name=name, **read_fields(r, data, TeamEntry, path, exclude=("name",)), source=source)


def parse_key_fields(r: Reader, data: dict[str, Any], path: str, *, key_id: str, key_hash: str, hint: str, source: str) -> VirtualKey:
    values = read_fields(r, data, KeyEntry, path)
    return VirtualKey(id=key_id, key_hash=key_hash, **values, hint=hint, source=source)


def parse_auth(r: Reader, raw: Any) -> AuthSettings:
    data = r.mapping(raw, "auth", keys_of(AuthSettings))
    values = read_fields(r, data, AuthSettings, "auth")
    pepper = r.env.get("ROUTER_KEY_PEPPER", "")

    teams: dict[str, Team] = {}
    for name, raw_team in r.mapping(data.get("teams"), "auth.teams").items():
        path = f"auth.teams.{name}"
        if check_name(r, str(name), path) is None:
            continue
        teams[str(name)] = parse_team(r, str(name), r.mapping(raw_team, path, TEAM_FIELDS[1:]), path, "config")

    keys: dict[str, VirtualKey] = {}
    for name, raw_key in r.mapping(data.get("keys"), "auth.keys").items():
        path = f"auth.keys.{name}"
        if check_name(r, str(name), path) is None:
            continue
        entry = r.mapping(raw_key, path, CONFIG_KEY_FIELDS)
        plain = r.string(entry.get("key"), f"{path}.key")
        digest = r.string(entry.get("hash"), f"{path}.hash")
        if (plain is None) == (digest is None):
            r.fail(path, "set exactly one of 'key' (from the environment, like ${CI_BOT_KEY}) or 'hash' (from `llm-router keys hash`)")
            continue
        if plain is not None and len(plain) < 16:
            r.fail(f"{path}.key", "is too short to be a key: use at least 16 characters (`llm-router keys generate` makes one)")
            continue
        if digest is not None and not _HEX64.match(digest):
            r.fail(f"{path}.hash", "must be 64 lowercase hex characters, as `llm-router keys hash` prints")
            continue
        key_hash = hash_key(plain, pepper) if plain is not None else str(digest)
        key = parse_key_fields(
            r, entry, path, key_id=f"cfg_{name}", key_hash=key_hash, hint=key_hint(plain) if plain else "(hash from config)", source="config"
        )
        if key.team is not None and key.team not in teams:
            r.fail(f"{path}.team", f"unknown team {key.team!r}; declare it under auth.teams (declared: {', '.join(sorted(teams)) or 'none'})")
        if key_hash in keys:
            r.fail(path, f"has the same key as auth.keys.{keys[key_hash].id[4:]}")
        keys[key_hash] = key

    return AuthSettings(**values, pepper=Secret(pepper), teams=MappingProxyType(teams), keys_by_hash=MappingProxyType(keys))


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def unsafe_listen(settings: AuthSettings, host: str) -> str | None:
    """Why the gateway must not listen on ``host`` with these settings, or None if it may."""
    if settings.enabled or settings.allow_remote_without_auth or is_loopback(host):
        return None
    return (
        f"authentication is off (auth.enabled: false), so the gateway only listens on loopback, not {host!r}: "
        "enable auth, listen on 127.0.0.1, or set auth.allow_remote_without_auth: true if a network boundary protects it"
    )


def names_alias(name: str, alias_names: Collection[str]) -> bool:
    """Whether ``name`` is a declared alias, or a name a wildcard alias serves."""
    return name in alias_names or any(a.endswith("*") and name.startswith(a[:-1]) and len(name) >= len(a) for a in alias_names)


def check_alias_names(r: Reader, auth: AuthSettings, alias_names: Collection[str]) -> None:
    """An allowed alias that names nothing is a typo that would lock its key out; say so at load."""
    entries = [(f"auth.teams.{t.name}.aliases", t.aliases) for t in auth.teams.values()]
    entries += [(f"auth.keys.{k.id.removeprefix('cfg_')}.aliases", k.aliases) for k in auth.keys_by_hash.values()]
    for path, aliases in entries:
        for name in sorted(aliases or ()):
            if not names_alias(name, alias_names):
                r.fail(path, f"unknown alias {name!r}; declared aliases: {', '.join(sorted(alias_names))}")
