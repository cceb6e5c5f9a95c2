"""``llm-router``: serve the gateway, or check a route table.

    llm-router serve --config routes.yaml [--host H] [--port P]
    llm-router check routes.yaml
    llm-router usage --since 7d --by team,model [--config routes.yaml] [--format table|csv|json]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from router.config import ConfigError, RouteTable, load_table
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
            print(f"    {i}. {target.provider.name} -> {target.model}")
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


async def _serve(table: RouteTable, host: str | None, port: int | None) -> None:
    server = await start_server(table, host, port)
    log.info("llm-router serving %s on %s (aliases: %s)", table.source, server.url, ", ".join([*table.aliases, *(a.name for a in table.wildcards)]))
    print(f"llm-router: serving on {server.url}  (try: curl {server.url}/v1/models)", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop()


def serve(args: argparse.Namespace) -> int:
    try:
        table = load_table(args.config)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    try:
        import uvloop
    except ImportError:  # uvloop is a speed-up, not a requirement (it has no Windows build)
        asyncio.run(_serve(table, args.host, args.port))
    else:
        uvloop.run(_serve(table, args.host, args.port))
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
    p_serve.add_argument("--config", default="routes.yaml", help="route table (default: routes.yaml)")
    p_serve.add_argument("--host", default=None, help="listen address (default: server.host in the config)")
    p_serve.add_argument("--port", type=int, default=None, help="listen port (default: server.port in the config)")
    p_serve.set_defaults(func=serve)
    p_check = sub.add_parser("check", help="validate a route table and print what it resolves to")
    p_check.add_argument("config", help="path to routes.yaml")
    p_check.set_defaults(func=check)
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
