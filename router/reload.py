"""Live reload of routes.yaml: load, validate, swap the whole table, or refuse and keep serving.

Three triggers share one path, ``Reloader.reload``:
    SIGHUP                 cli.py installs the handler
    --watch                ``Reloader.watch`` polls the file (a ConfigMap update is a symlink swap, so polling
                           the path catches it where an inotify watch on the old inode would not)
    POST /admin/reload     ``admin_reload`` below (the auth middleware guards /admin/*)

A new table replaces the old in one assignment (``Gateway.swap_table``).  Each
request takes one snapshot of the table when it starts, so requests in
flight finish on the old table.  Target state (circuits, counters) is keyed by
``Target.key`` (provider/model) and lives beside the table, not in it, so it
carries over for every target that still exists.

An invalid file is refused with exactly the errors ``llm-router check`` prints;
``Reloader.failures`` counts refusals for the metrics, and a log line says so.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

import orjson
from aiohttp import web

from router.config import ConfigError, RouteTable, load_table
from router.errors import ConfigRejected
from router.gateway import Gateway
from router.logs import log_event, reconfigure_logging, remember_secrets

log = logging.getLogger("router.reload")


@dataclass(frozen=True)
class ReloadResult:
    ok: bool
    trigger: str
    source: str
    errors: tuple[str, ...] = ()  # the lines `llm-router check` prints, when refused
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    needs_restart: tuple[str, ...] = field(default=())


def _aliases(table: RouteTable) -> dict[str, object]:
    return {**table.aliases, **{a.name: a for a in table.wildcards}}


def _restart_only_changes(old: RouteTable, new: RouteTable) -> tuple[str, ...]:
    """Settings bound when the process started (listen socket, state store): a reload cannot move them."""
    changed = []
    if (old.server.host, old.server.port) != (new.server.host, new.server.port):
        changed.append("server.host/port")
    if old.state != new.state:
        changed.append("state")
    return tuple(changed)


class Reloader:
    def __init__(self, gateway: Gateway, env: Mapping[str, str] | None = None) -> None:
        self.gateway = gateway
        self.env = env
        self.reloads = 0  # successful swaps
        self.failures = 0  # refused files: the metrics helper exports this counter
        self.last: ReloadResult | None = None
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[ReloadResult]] = set()

    @property
    def path(self) -> str:
        return self.gateway.table.source

    async def reload(self, trigger: str) -> ReloadResult:
        async with self._lock:  # two SIGHUPs in a row must not interleave their swaps
            old = self.gateway.table
            try:
                # Reading and parsing a file is blocking work; keep it off the event loop.
                new = await asyncio.to_thread(load_table, old.source, self.env)
            except ConfigError as exc:
                self.failures += 1
                errors = tuple(str(exc).splitlines())
                log_event(
                    log,
                    "reload refused; the old route table keeps serving",
                    logging.ERROR,
                    event="reload_failed",
                    trigger=trigger,
                    source=old.source,
                    errors=list(errors),
                )
                self.last = ReloadResult(False, trigger, old.source, errors=errors)
                return self.last
            except Exception as exc:  # a bug must not end the watcher or the process; the old table serves on
                self.failures += 1
                log.exception("reload failed unexpectedly; the old route table keeps serving", extra={"fields": {"event": "reload_failed", "trigger": trigger}})
                self.last = ReloadResult(False, trigger, old.source, errors=(f"{old.source}: {type(exc).__name__}: {exc}",))
                return self.last
            before, after = _aliases(old), _aliases(new)
            result = ReloadResult(
                True,
                trigger,
                new.source,
                added=tuple(sorted(after.keys() - before.keys())),
                removed=tuple(sorted(before.keys() - after.keys())),
                changed=tuple(sorted(n for n in before.keys() & after.keys() if before[n] != after[n])),
                needs_restart=_restart_only_changes(old, new),
            )
            remember_secrets(new.secrets())
            self.gateway.swap_table(new)
            self.reloads += 1
            self.last = result
            if new.logging != old.logging:
                reconfigure_logging(new.logging)
            log_event(
                log,
                "route table reloaded",
                event="reload",
                trigger=trigger,
                source=new.source,
                aliases_added=list(result.added),
                aliases_removed=list(result.removed),
                aliases_changed=list(result.changed),
            )
            if result.needs_restart:
                log_event(
                    log,
                    "these settings changed but only take effect on restart",
                    logging.WARNING,
                    event="reload_needs_restart",
                    settings=list(result.needs_restart),
                )
            return result

    def request_reload(self, trigger: str) -> None:
        """Start a reload from a signal handler; the task is kept so it is neither lost nor left running at exit."""
        task = asyncio.get_running_loop().create_task(self.reload(trigger))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def watch(self, interval: float = 1.0) -> None:
        """Reload whenever the file's identity (inode, size, mtime) changes; runs until cancelled."""
        seen = _signature(self.path)
        while True:
            await asyncio.sleep(interval)
            now = _signature(self.path)
            if now != seen and now is not None:
                seen = now
                await self.reload("watch")

    async def wait_idle(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


def _signature(path: str) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)  # follows symlinks: a ConfigMap's ..data swap changes the target
    except OSError:
        return None  # mid-swap or removed: keep serving, look again next time
    return (st.st_ino, st.st_size, st.st_mtime_ns)


async def admin_reload(reloader: Reloader) -> web.Response:
    """POST /admin/reload: reload routes.yaml now; 200 with what changed, or 422 with the check errors."""
    result = await reloader.reload("admin")
    if not result.ok:
        raise ConfigRejected("the new routes.yaml was refused; the old table keeps serving:\n" + "\n".join(result.errors))
    body = {
        "status": "reloaded",
        "source": result.source,
        "aliases_added": result.added,
        "aliases_removed": result.removed,
        "aliases_changed": result.changed,
        "needs_restart": result.needs_restart,
    }
    return web.Response(body=orjson.dumps(body), content_type="application/json")
