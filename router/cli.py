"""``llm-router``: serve the gateway, or check a route table.

    llm-router serve --config routes.yaml [--host H] [--port P] [--watch]
    llm-router check routes.yaml
    llm-router keys ... | teams ...     the admin API (router/auth/cli.py)
    llm-router usage --since 7d --by team,model [--config routes.yaml] [--format table|csv|json]

Signals while serving: SIGHUP reloads routes.yaml (router/reload.py); SIGTERM
or SIGINT drains and exits 0 (router/server.py).  Every flag has an
environment variable (ROUTER_CONFIG, ROUTER_HOST, ROUTER_PORT), so a container
is configured the same way as everything else; deploy/README.md lists them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys

from router import __version__
from router.auth.cli import add_commands as add_auth_commands
from router.config import ConfigError, RouteTable, load_table
from router.logs import configure_logging, effective_settings, log_event
from router.server import start_server

log = logging.getLogger("router")


def _print_table(table: RouteTable) -> None:
    print(f"{table.source}: OK, {len(table.providers)} providers, {len(table.aliases) + len(table.wildcards)} aliases")
    for provider in table.providers.values():
        key = "key set" if provider.api_key else "no key"
        print(f"  provider {provider.name}: kind {provider.kind}, {provider.base_url} ({key})")
    for alias in (*table.aliases.values(), *table.wildcards):
        ops = ", ".join(sorted(op.value for op in alias.operations))
        print(f"  {alias.name} [{ops}; strategy {alias.strategy}]")
        for i, target in enumerate(alias.targets):
            print(f"    {i}. {target.provider.name} -> {target.model or '(the requested name)'}")
        if alias.fallbacks:
            print(f"    then: {', '.join(alias.fallbacks)}")


def check(args: argparse.Namespace) -> int:
    try:
        table = load_table(args.config)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        print(f"{len(exc.issues)} problem(s) found", file=sys.stderr)
        return 1
    _print_table(table)
    return 0


async def _serve(table: RouteTable, host: str | None, port: int | None, watch: float | None) -> None:
    try:
        server = await start_server(table, host, port)
    except ConfigError as exc:
        print(f"llm-router: refusing to start: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None
    gateway = server.gateway
    if not table.auth.enabled:
        log_event(log, f"authentication is OFF (auth.enabled: false in {table.source}); anyone who can reach {server.url} can use it",
                  logging.WARNING, event="auth_off", url=server.url)
    log_event(log, "llm-router serving", event="started", version=__version__, pid=os.getpid(), url=server.url, source=table.source,
              aliases=[*table.aliases, *(a.name for a in table.wildcards)], watch=watch is not None)
    if effective_settings(table.logging)[1] == "text":  # a JSON log stream stays pure JSON
        print(f"llm-router: serving on {server.url}  (try: curl {server.url}/v1/models)", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, gateway.reloader.request_reload, "SIGHUP")
    watcher = asyncio.create_task(gateway.reloader.watch(watch)) if watch is not None else None
    await stop.wait()
    grace = gateway.table.server.shutdown_grace
    log_event(log, "shutting down: not ready, no new connections, draining requests in flight", event="draining", grace_seconds=grace,
              open_connections=server.open_connections)
    draining_since = loop.time()
    loop.remove_signal_handler(signal.SIGHUP)
    if watcher is not None:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
    await server.stop()
    log_event(log, "shutdown complete", event="shutdown", drained_in_seconds=round(loop.time() - draining_since, 3))


def serve(args: argparse.Namespace) -> int:
    try:
        table = load_table(args.config)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    configure_logging(table.logging)
    watch = args.watch_interval if args.watch else None
    try:
        import uvloop
    except ImportError:  # uvloop is a speed-up, not a requirement (it has no Windows build)
        asyncio.run(_serve(table, args.host, args.port, watch))
    else:
        uvloop.run(_serve(table, args.host, args.port, watch))
    return 0


def usage(args: argparse.Namespace) -> int:
    from router.accounting.usage_cli import print_usage

    try:
        table = load_table(args.config)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    return asyncio.run(print_usage(table, args.since, args.until, args.by, args.format))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="llm-router", description="An OpenAI-compatible LLM gateway.")
    sub = parser.add_subparsers(dest="command", required=True)
    p_serve = sub.add_parser("serve", help="serve the gateway")
    env = os.environ
    p_serve.add_argument("--config", default=env.get("ROUTER_CONFIG", "routes.yaml"), help="route table (default: $ROUTER_CONFIG or routes.yaml)")
    p_serve.add_argument("--host", default=env.get("ROUTER_HOST") or None, help="listen address (default: $ROUTER_HOST or server.host in the config)")
    p_serve.add_argument("--port", type=int, default=int(env["ROUTER_PORT"]) if env.get("ROUTER_PORT") else None,
                         help="listen port (default: $ROUTER_PORT or server.port in the config)")
    p_serve.add_argument("--watch", action="store_true", default=env.get("ROUTER_WATCH", "").lower() in ("1", "true", "yes"),
                         help="reload routes.yaml when the file changes (default: $ROUTER_WATCH); SIGHUP always reloads")
    p_serve.add_argument("--watch-interval", type=float, default=1.0, help="seconds between looks at the file (default: 1)")
    p_serve.set_defaults(func=serve)
    p_check = sub.add_parser("check", help="validate a route table and print what it resolves to")
    p_check.add_argument("config", help="path to routes.yaml")
    p_check.set_defaults(func=check)
    add_auth_commands(sub)
    p_usage = sub.add_parser("usage", help="spend and tokens from the ledger, grouped")
    p_usage.add_argument("--config", default="routes.yaml", help="route table naming the ledger (default: routes.yaml)")
    p_usage.add_argument("--since", default="30d", help="start: 7d, 24h, 2026-11-01, unix seconds (default: 30d)")
    p_usage.add_argument("--until", default=None, help="end, exclusive (default: now)")
    p_usage.add_argument("--by", default="", help="group keys: team,model,provider,alias,day,user,key_id,status,tag:<key>")
    p_usage.add_argument("--format", choices=("table", "csv", "json"), default="table")
    p_usage.set_defaults(func=usage)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
