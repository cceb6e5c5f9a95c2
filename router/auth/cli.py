"""``llm-router keys ...`` and ``llm-router teams ...``: the admin API from a shell.

    llm-router keys create [--name N] [--team T] [--user U] [--alias A ...] [--budget-usd X --period day|week|month|total]
                           [--rpm N] [--tpm N] [--concurrency N] [--expires-at ISO] [--tag k=v ...]
    llm-router keys list | show ID | rotate ID | revoke ID
    llm-router keys generate          a fresh key, for routes.yaml's  key: ${ENV}  (offline)
    llm-router keys hash < keyfile    the hash to put in routes.yaml's  hash:  (offline; uses ROUTER_KEY_PEPPER)
    llm-router teams create NAME [same limits/budget/alias/tag options] | list | show NAME | delete NAME

The gateway is ``--url`` (default ``$ROUTER_URL`` or http://127.0.0.1:8080)
and the token is ``$ROUTER_ADMIN_TOKEN``: never an argument, so it stays out
of shell history and process listings.  ``keys hash`` reads the key from
stdin for the same reason.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from typing import Any

from router.auth.keys import PERIODS, generate_key, hash_key


def _request(args: argparse.Namespace, method: str, path: str, body: dict[str, Any] | None = None) -> int:
    token = os.environ.get("ROUTER_ADMIN_TOKEN", "")
    if not token:
        print("llm-router: set ROUTER_ADMIN_TOKEN to the gateway's admin token", file=sys.stderr)
        return 2
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        args.url.rstrip("/") + path, data=data, method=method, headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=args.timeout) as response:  # noqa: S310 (an http(s) URL the operator gave)
            answer = json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read())["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = exc.reason
        print(f"llm-router: {method} {path}: {exc.code} {message}", file=sys.stderr)
        return 1
    except (urllib.error.URLError, OSError) as exc:
        print(f"llm-router: cannot reach {args.url}: {getattr(exc, 'reason', exc)}", file=sys.stderr)
        return 1
    print(json.dumps(answer, indent=2))
    if isinstance(answer, dict) and "key" in answer:
        print("llm-router: store this key now; it is not shown again", file=sys.stderr)
    return 0


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if args.alias:
        body["aliases"] = args.alias
    limits = {name: getattr(args, name) for name in ("rpm", "tpm", "concurrency") if getattr(args, name) is not None}
    if limits:
        body["limits"] = limits
    if args.budget_usd is not None:
        body["budget"] = {"usd": args.budget_usd, "period": args.period}
    if args.tag:
        body["metadata"] = dict(tag.split("=", 1) for tag in args.tag)
    return body


def _add_settings_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--alias", action="append", help="an alias it may use (repeat; default: every alias)")
    parser.add_argument("--rpm", type=int)
    parser.add_argument("--tpm", type=int)
    parser.add_argument("--concurrency", type=int)
    parser.add_argument("--budget-usd", help="USD per period, like 25 or 0.5")
    parser.add_argument("--period", choices=PERIODS, default="month")
    parser.add_argument("--tag", action="append", type=_tag, help="default metadata tag k=v for cost attribution (repeat)")


def _tag(value: str) -> str:
    if "=" not in value:
        raise argparse.ArgumentTypeError("a tag is key=value")
    return value


def keys(args: argparse.Namespace) -> int:
    action = args.action
    if action == "generate":
        print(generate_key())
        return 0
    if action == "hash":
        key = sys.stdin.readline().strip()
        if not key:
            print("llm-router: pipe the key on stdin, like: llm-router keys hash < key.txt", file=sys.stderr)
            return 2
        print(hash_key(key, os.environ.get("ROUTER_KEY_PEPPER", "")))
        return 0
    if action == "create":
        body = _settings(args)
        for name in ("name", "team", "user", "expires_at"):
            if getattr(args, name) is not None:
                body[name] = getattr(args, name)
        return _request(args, "POST", "/admin/keys", body)
    if action == "list":
        return _request(args, "GET", "/admin/keys")
    if action == "show":
        return _request(args, "GET", f"/admin/keys/{args.id}")
    return _request(args, "POST", f"/admin/keys/{args.id}/{action}")  # rotate, revoke


def teams(args: argparse.Namespace) -> int:
    if args.action == "create":
        return _request(args, "POST", "/admin/teams", {"name": args.name, **_settings(args)})
    if args.action == "list":
        return _request(args, "GET", "/admin/teams")
    if args.action == "show":
        return _request(args, "GET", f"/admin/teams/{args.name}")
    return _request(args, "DELETE", f"/admin/teams/{args.name}")


def add_commands(sub: Any) -> None:
    def connection(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--url", default=os.environ.get("ROUTER_URL", "http://127.0.0.1:8080"), help="the gateway (default: $ROUTER_URL or http://127.0.0.1:8080)"
        )
        parser.add_argument("--timeout", type=float, default=10.0)

    p_keys = sub.add_parser("keys", help="create, list, rotate and revoke client keys (admin API)")
    key_actions = p_keys.add_subparsers(dest="action", required=True)
    create = key_actions.add_parser("create", help="mint a key; it is printed once")
    for name in ("name", "team", "user"):
        create.add_argument(f"--{name}")
    create.add_argument("--expires-at", help="ISO 8601, like 2027-01-01T00:00:00Z")
    _add_settings_options(create)
    connection(create)
    connection(key_actions.add_parser("list", help="every key (never the key itself)"))
    for action, text in (("show", "one key and its spend"), ("rotate", "a new key for the same id; the old stops"), ("revoke", "stop a key everywhere")):
        parser = key_actions.add_parser(action, help=text)
        parser.add_argument("id")
        connection(parser)
    key_actions.add_parser("generate", help="print a fresh key for routes.yaml (offline)")
    key_actions.add_parser("hash", help="print the hash of the key on stdin, for routes.yaml (offline)")
    p_keys.set_defaults(func=keys)

    p_teams = sub.add_parser("teams", help="create, list and delete teams (admin API)")
    team_actions = p_teams.add_subparsers(dest="action", required=True)
    create_team = team_actions.add_parser("create")
    create_team.add_argument("name")
    _add_settings_options(create_team)
    connection(create_team)
    connection(team_actions.add_parser("list"))
    for action in ("show", "delete"):
        parser = team_actions.add_parser(action)
        parser.add_argument("name")
        connection(parser)
    p_teams.set_defaults(func=teams)
