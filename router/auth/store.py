"""Where keys and teams created through the admin API live, and the cached lookup every request makes.

    KeyStore          the interface: lookup by hash (key and its team in one round trip), CRUD
    MemoryKeyStore    one process (state.backend: memory)
    RedisKeyStore     any number of replicas (state.backend: redis)
    KeyResolver       presented key -> Principal: routes.yaml keys first, then a short
                      local cache, then the store

Redis layout (``<prefix>`` is state.prefix):
    <prefix>:auth:key:<hash>    JSON of the VirtualKey
    <prefix>:auth:keyid:<id>    the key's current hash (rotation moves it)
    <prefix>:auth:keys          set of key ids
    <prefix>:auth:team:<name>   JSON of the Team
    <prefix>:auth:teams         set of team names

Propagation: a key created on one replica is in Redis before its creator
sees it, and a replica that has never seen a hash asks Redis, so new keys
work everywhere at once.  A revoked or rotated key is dropped from the
revoking replica's cache at once and from every other replica's when its
cache entry expires: within ``auth.cache_ttl`` (0.5 s by default, at most 1 s).
Unknown hashes are cached too (guessers cannot make us hammer Redis); that is
safe because a key is unknown to everyone until the moment it is minted.
"""

from __future__ import annotations

import hmac
import time
from typing import Any, Protocol

import orjson
from redis.exceptions import RedisError

from router.auth.keys import Principal, Team, VirtualKey, hash_key
from router.auth.settings import AuthSettings
from router.errors import AuthUnavailable


class KeyStore(Protocol):
    async def lookup(self, key_hash: str) -> tuple[VirtualKey | None, Team | None]: ...
    async def get_key(self, key_id: str) -> VirtualKey | None: ...
    async def list_keys(self) -> list[VirtualKey]: ...
    async def save_key(self, key: VirtualKey, replaces_hash: str | None = None) -> None: ...
    async def get_team(self, name: str) -> Team | None: ...
    async def list_teams(self) -> list[Team]: ...
    async def save_team(self, team: Team) -> None: ...
    async def delete_team(self, name: str) -> None: ...


class MemoryKeyStore:
    def __init__(self) -> None:
        self.keys: dict[str, VirtualKey] = {}  # by hash
        self.ids: dict[str, str] = {}  # id -> hash
        self.teams: dict[str, Team] = {}

    async def lookup(self, key_hash: str) -> tuple[VirtualKey | None, Team | None]:
        key = self.keys.get(key_hash)
        return key, self.teams.get(key.team) if key is not None and key.team else None

    async def get_key(self, key_id: str) -> VirtualKey | None:
        key_hash = self.ids.get(key_id)
        return self.keys.get(key_hash) if key_hash else None

    async def list_keys(self) -> list[VirtualKey]:
        return sorted(self.keys.values(), key=lambda k: k.created_at)

    async def save_key(self, key: VirtualKey, replaces_hash: str | None = None) -> None:
        if replaces_hash is not None and replaces_hash != key.key_hash:
            self.keys.pop(replaces_hash, None)
        self.keys[key.key_hash] = key
        self.ids[key.id] = key.key_hash

    async def get_team(self, name: str) -> Team | None:
        return self.teams.get(name)

    async def list_teams(self) -> list[Team]:
        return sorted(self.teams.values(), key=lambda t: t.name)

    async def save_team(self, team: Team) -> None:
        self.teams[team.name] = team

    async def delete_team(self, name: str) -> None:
        self.teams.pop(name, None)


# The key and its team in one round trip: the team's name is inside the key's JSON.
_LOOKUP = """
local key = redis.call('GET', KEYS[1])
if not key then return nil end
local team = cjson.decode(key)['team']
if type(team) == 'string' then return {key, redis.call('GET', ARGV[1] .. team)} end
return {key, false}
"""


class RedisKeyStore:
    def __init__(self, redis: Any, prefix: str) -> None:
        self.redis = redis
        self.base = prefix.rstrip(":") + ":auth:"
        self._lookup = redis.register_script(_LOOKUP)

    async def _call(self, what: str, coro: Any) -> Any:
        try:
            return await coro
        except (RedisError, OSError, TimeoutError) as exc:
            # Fail closed: without the store we cannot tell a revoked key from a good one.
            raise AuthUnavailable(f"the key store is unavailable ({what}); try again shortly") from exc

    async def lookup(self, key_hash: str) -> tuple[VirtualKey | None, Team | None]:
        found = await self._call("lookup", self._lookup(keys=[self.base + "key:" + key_hash], args=[self.base + "team:"]))
        if not found:
            return None, None
        key = VirtualKey.from_json(orjson.loads(found[0]))
        return key, Team.from_json(orjson.loads(found[1])) if found[1] else None

    async def get_key(self, key_id: str) -> VirtualKey | None:
        key_hash = await self._call("get key", self.redis.get(self.base + "keyid:" + key_id))
        if not key_hash:
            return None
        raw = await self._call("get key", self.redis.get(self.base + "key:" + key_hash.decode()))
        return VirtualKey.from_json(orjson.loads(raw)) if raw else None

    async def list_keys(self) -> list[VirtualKey]:
        ids = sorted(i.decode() for i in await self._call("list keys", self.redis.smembers(self.base + "keys")))
        if not ids:
            return []
        hashes = await self._call("list keys", self.redis.mget([self.base + "keyid:" + i for i in ids]))
        present = [h.decode() for h in hashes if h]
        raws = await self._call("list keys", self.redis.mget([self.base + "key:" + h for h in present])) if present else []
        return sorted((VirtualKey.from_json(orjson.loads(raw)) for raw in raws if raw), key=lambda k: k.created_at)

    async def save_key(self, key: VirtualKey, replaces_hash: str | None = None) -> None:
        pipe = self.redis.pipeline(transaction=True)
        pipe.set(self.base + "key:" + key.key_hash, orjson.dumps(key.to_json()))
        pipe.set(self.base + "keyid:" + key.id, key.key_hash)
        pipe.sadd(self.base + "keys", key.id)
        if replaces_hash is not None and replaces_hash != key.key_hash:
            pipe.delete(self.base + "key:" + replaces_hash)
        await self._call("save key", pipe.execute())

    async def get_team(self, name: str) -> Team | None:
        raw = await self._call("get team", self.redis.get(self.base + "team:" + name))
        return Team.from_json(orjson.loads(raw)) if raw else None

    async def list_teams(self) -> list[Team]:
        names = sorted(n.decode() for n in await self._call("list teams", self.redis.smembers(self.base + "teams")))
        raws = await self._call("list teams", self.redis.mget([self.base + "team:" + n for n in names])) if names else []
        return [Team.from_json(orjson.loads(raw)) for raw in raws if raw]

    async def save_team(self, team: Team) -> None:
        pipe = self.redis.pipeline(transaction=True)
        pipe.set(self.base + "team:" + team.name, orjson.dumps(team.to_json()))
        pipe.sadd(self.base + "teams", team.name)
        await self._call("save team", pipe.execute())

    async def delete_team(self, name: str) -> None:
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(self.base + "team:" + name)
        pipe.srem(self.base + "teams", name)
        await self._call("delete team", pipe.execute())


class KeyResolver:
    """Presented key -> ``Principal`` (or None: unknown or revoked, which the caller answers alike)."""

    MAX_CACHED = 50_000

    def __init__(self, store: KeyStore) -> None:
        self.store = store
        self._cache: dict[str, tuple[float, Principal | None]] = {}

    async def resolve(self, settings: AuthSettings, presented: str) -> Principal | None:
        key_hash = hash_key(presented, settings.pepper.reveal())
        declared = settings.keys_by_hash.get(key_hash)
        if declared is not None:
            return self._checked(key_hash, declared, settings.teams.get(declared.team) if declared.team else None)
        now = time.monotonic()
        cached = self._cache.get(key_hash)
        if cached is not None and cached[0] > now:
            return cached[1]
        key, team = await self.store.lookup(key_hash)
        if key is not None and key.team is not None and key.team in settings.teams:
            team = settings.teams[key.team]  # a team declared in routes.yaml wins over a stored one
        # A key whose team is gone is refused: its limits and budget came from that team.
        usable = key is not None and not key.revoked and (key.team is None or team is not None)
        principal = self._checked(key_hash, key, team) if usable and key is not None else None
        if len(self._cache) >= self.MAX_CACHED:
            self._cache.clear()  # bounded memory under a flood of guesses; the store still answers
        self._cache[key_hash] = (now + settings.cache_ttl, principal)
        return principal

    def forget(self, key_hash: str) -> None:
        self._cache.pop(key_hash, None)

    @staticmethod
    def _checked(key_hash: str, key: VirtualKey, team: Team | None) -> Principal | None:
        # The lookup was by hash; compare again in constant time so no code path
        # ever decides on a key by a short-circuiting string comparison.
        return Principal(key, team) if hmac.compare_digest(key_hash, key.key_hash) else None
