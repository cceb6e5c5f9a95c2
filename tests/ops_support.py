"""Helpers for the operations tests: route tables on disk, a gateway process's JSON log lines."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import yaml
from multidict import CIMultiDict

from tests.conftest import GatewayProcess, provider_entry
from tests.fakes.upstream import FakeUpstream

JSON_LOGS = {"ROUTER_LOG_FORMAT": "json", "ROUTER_LOG_LEVEL": "info"}


def routes(upstream: FakeUpstream, model: str, **server: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "providers": {"up": provider_entry(upstream)},
        "models": {"chat": {"targets": [{"provider": "up", "model": model}]}},
        # Written to disk and reloaded, so the fixtures cannot add it: auth off, explicitly.
        "auth": {"enabled": False},
    }
    if server:
        config["server"] = server
    return config


def write_config(path: Path, config: dict[str, Any]) -> None:
    """Replace the file in one step, as an editor or a ConfigMap update does; a reader never sees half a file."""
    staging = path.with_suffix(".staging")
    staging.write_text(yaml.safe_dump(config))
    os.replace(staging, path)


def json_lines(gp: GatewayProcess) -> list[dict[str, Any]]:
    """Every line the process printed, parsed: a line that is not JSON fails the test."""
    parsed = []
    for line in gp.output:
        try:
            parsed.append(orjson.loads(line))
        except orjson.JSONDecodeError:
            raise AssertionError(f"log line is not JSON: {line!r}") from None
    return parsed


def events(gp: GatewayProcess, event: str) -> list[dict[str, Any]]:
    return [line for line in json_lines(gp) if line.get("event") == event]


def chat_body(stream: bool = False, text: str = "hi") -> dict[str, Any]:
    return {"model": "chat", "messages": [{"role": "user", "content": text}], "stream": stream}


async def chat(
    session: aiohttp.ClientSession, url: str, *, stream: bool = False, request_id: str | None = None, text: str = "hi"
) -> tuple[int, CIMultiDict[str], str]:
    """One request, read to the end: (status, headers, body text)."""
    headers = {"x-request-id": request_id} if request_id else {}
    async with session.post(url + "/v1/chat/completions", json=chat_body(stream, text), headers=headers) as r:
        return r.status, CIMultiDict(r.headers), await r.text()
