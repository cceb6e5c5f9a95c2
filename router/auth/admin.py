"""The admin API for keys and teams (behind ROUTER_ADMIN_TOKEN, checked by auth_middleware).

    POST   /admin/keys                 create; the answer carries the key, the only time it is shown
    GET    /admin/keys                 list (never a key, never a hash)
    GET    /admin/keys/{id}            one key, with its spend this period
    POST   /admin/keys/{id}/rotate     a new key for the same id; the old one stops
    POST   /admin/keys/{id}/revoke     (or DELETE /admin/keys/{id}) the key stops working everywhere
    POST   /admin/teams                create
    GET    /admin/teams                list
    GET    /admin/teams/{name}         one team, with its spend this period
    PUT    /admin/teams/{name}         replace a team's aliases, limits, budget, metadata
    DELETE /admin/teams/{name}         only when no active key belongs to it

Bodies use the field names of routes.yaml's ``auth.keys`` / ``auth.teams``
and are checked by the same readers.  Keys and teams declared in routes.yaml
are listed but read-only here: change them in the file.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import orjson
from aiohttp import web

from router.auth.budget import budget_scopes
from router.auth.keys import Principal, Team, VirtualKey, generate_key, hash_key, key_hint, new_key_id
from router.auth.settings import KEY_FIELDS, TEAM_FIELDS, check_name, names_alias, parse_key_fields, parse_team
from router.errors import Conflict, InvalidRequest, NotFound
from router.gateway import Gateway
from router.keys import GATEWAY
from router.schema import Reader as _Reader

ADMIN_ROUTES = web.RouteTableDef()  # each handler states its method and path; app.py adds the table


def _listing(data: list[dict[str, Any]]) -> web.Response:
    """Declared (routes.yaml) objects first, then those made through the API."""
    return _json({"object": "list", "data": data})


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


async def _body(request: web.Request, allowed: tuple[str, ...]) -> tuple[_Reader, dict[str, Any]]:
    try:
        data = orjson.loads(await request.read() or b"{}")
    except orjson.JSONDecodeError:
        raise InvalidRequest("the body is not valid JSON", code="invalid_json") from None
    if not isinstance(data, dict):
        raise InvalidRequest("the body must be a JSON object", code="invalid_json")
    # No environment: ${VAR} in an admin body must never read the gateway's environment.
    reader = _Reader({})
    return reader, reader.mapping(data, "", allowed)


def _known_aliases(reader: _Reader, gateway: Gateway, aliases: frozenset[str] | None) -> None:
    table = gateway.table
    declared = [*table.aliases, *(a.name for a in table.wildcards)]
    for name in sorted(aliases or ()):
        if not names_alias(name, declared):
            reader.fail("aliases", f"unknown alias {name!r}; this gateway serves: {', '.join(declared)}")


def _check(reader: _Reader) -> None:
    if reader.issues:
        raise InvalidRequest("; ".join(f"{path}: {message}" if path else message for path, message in reader.issues), param=reader.issues[0][0] or None)


async def _team(gateway: Gateway, name: str) -> Team | None:
    return gateway.table.auth.teams.get(name) or await gateway.auth.store.get_team(name)


async def _named_team(request: web.Request, change: str | None = None) -> Team:
    """The team the path names, or 404; with ``change`` (what the caller means to do), 409 for one routes.yaml declares."""
    name = request.match_info["name"]
    team = await _team(request.app[GATEWAY], name)
    if team is None:
        raise NotFound(f"no team named {name!r}")
    if change is not None and team.source == "config":
        raise Conflict(f"team {name!r} is declared in routes.yaml; {change} it there and reload")
    return team


async def _key(gateway: Gateway, key_id: str) -> VirtualKey:
    for declared in gateway.table.auth.keys_by_hash.values():
        if declared.id == key_id:
            return declared
    key = await gateway.auth.store.get_key(key_id)
    if key is None:
        raise NotFound(f"no key with id {key_id!r}")
    return key


def _editable(key: VirtualKey) -> None:
    if key.source == "config":
        raise Conflict(f"key {key.id} is declared in routes.yaml; change it there and reload")


async def _with_spend(gateway: Gateway, public: dict[str, Any], principal: Principal) -> dict[str, Any]:
    scopes = budget_scopes(principal, time.time())
    if scopes:
        spent = await gateway.auth.book.spent([s.counter for s in scopes])
        public["spend"] = [
            {"scope": s.label, "spent_micro_usd": used, "limit_micro_usd": s.limit_micro_usd, "resets_at": s.resets_at}
            for s, used in zip(scopes, spent, strict=True)
        ]
    return public


@ADMIN_ROUTES.post("/admin/keys")
async def create_key(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY]
    reader, data = await _body(request, KEY_FIELDS)
    plain = generate_key()
    key = parse_key_fields(
        reader, data, "", key_id=new_key_id(), key_hash=hash_key(plain, gateway.table.auth.pepper.reveal()), hint=key_hint(plain), source="admin"
    )
    if key.team is not None and await _team(gateway, key.team) is None:
        reader.fail("team", f"unknown team {key.team!r}; create it first with POST /admin/teams")
    if key.expired():
        # A key that could only ever answer 403 is a mistake (a date in the wrong year, seconds for milliseconds).
        reader.fail("expires_at", "is in the past; give a future time (unix seconds or ISO 8601), or leave it out for a key that never expires")
    _known_aliases(reader, gateway, key.aliases)
    _check(reader)
    await gateway.auth.store.save_key(key)
    return _json({"key": plain, **key.public()}, status=201)


@ADMIN_ROUTES.get("/admin/keys")
async def list_keys(request: web.Request) -> web.Response:
    auth = request.app[GATEWAY].auth
    return _listing([k.public() for k in (*request.app[GATEWAY].table.auth.keys_by_hash.values(), *await auth.store.list_keys())])


@ADMIN_ROUTES.get("/admin/keys/{key_id}")
async def get_key(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY]
    key = await _key(gateway, request.match_info["key_id"])
    team = await _team(gateway, key.team) if key.team else None
    return _json(await _with_spend(gateway, key.public(), Principal(key, team)))


@ADMIN_ROUTES.post("/admin/keys/{key_id}/rotate")
async def rotate_key(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY]
    key = await _key(gateway, request.match_info["key_id"])
    _editable(key)
    if key.revoked:
        raise Conflict(f"key {key.id} is revoked; create a new one")
    plain = generate_key()
    rotated = replace(key, key_hash=hash_key(plain, gateway.table.auth.pepper.reveal()), hint=key_hint(plain))
    await gateway.auth.store.save_key(rotated, replaces_hash=key.key_hash)
    gateway.auth.resolver.forget(key.key_hash)
    return _json({"key": plain, **rotated.public()})


@ADMIN_ROUTES.post("/admin/keys/{key_id}/revoke")
@ADMIN_ROUTES.delete("/admin/keys/{key_id}")
async def revoke_key(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY]
    key = await _key(gateway, request.match_info["key_id"])
    _editable(key)
    revoked = key.revoke()
    await gateway.auth.store.save_key(revoked)
    gateway.auth.resolver.forget(key.key_hash)
    return _json(revoked.public())


@ADMIN_ROUTES.post("/admin/teams")
async def create_team(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY]
    reader, data = await _body(request, TEAM_FIELDS)
    name = check_name(reader, data.get("name"), "name")
    team = parse_team(reader, name or "", data, "", "admin")
    _known_aliases(reader, gateway, team.aliases)
    _check(reader)
    if await _team(gateway, team.name) is not None:
        raise Conflict(f"team {team.name!r} exists; change it with PUT /admin/teams/{team.name}")
    await gateway.auth.store.save_team(team)
    return _json(team.to_json(), status=201)


@ADMIN_ROUTES.put("/admin/teams/{name}")
async def update_team(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY]
    current = await _named_team(request, "change")
    name = current.name
    reader, data = await _body(request, TEAM_FIELDS[1:])
    team = replace(parse_team(reader, name, data, "", "admin"), created_at=current.created_at)
    _known_aliases(reader, gateway, team.aliases)
    _check(reader)
    await gateway.auth.store.save_team(team)
    return _json(team.to_json())


@ADMIN_ROUTES.get("/admin/teams")
async def list_teams(request: web.Request) -> web.Response:
    teams = [*request.app[GATEWAY].table.auth.teams.values(), *await request.app[GATEWAY].auth.store.list_teams()]
    return _listing([t.to_json() for t in teams])


@ADMIN_ROUTES.get("/admin/teams/{name}")
async def get_team(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY]
    team = await _named_team(request)
    # The team's own spend: a stand-in key with no budget contributes no scope.
    return _json(await _with_spend(gateway, team.to_json(), Principal(VirtualKey(id="-", key_hash=""), team)))


@ADMIN_ROUTES.delete("/admin/teams/{name}")
async def delete_team(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY]
    team = await _named_team(request, "remove")
    name = team.name
    members = [k.id for k in await gateway.auth.store.list_keys() if k.team == name and not k.revoked]
    if members:
        raise Conflict(f"team {name!r} still has active keys ({', '.join(members)}); revoke them first")
    await gateway.auth.store.delete_team(name)
    return _json({"name": name, "deleted": True})
