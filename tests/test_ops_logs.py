"""Structured logs: JSON lines with the request fields, and never a prompt or a secret."""

from __future__ import annotations

import logging
import signal

import aiohttp
import orjson
import pytest

from router.accounting.record import RequestRecord
from router.logs import ACCESS_LOGGER, FIELDS, JsonFormatter, TextFormatter, remember_secrets, request_fields
from router.secrets import Secret
from tests.conftest import provider_entry, wait_for
from tests.fakes.upstream import Behaviour
from tests.ops_support import JSON_LOGS, chat, events, json_lines

PROMPT = "zebra-prompt-4821 tell me the quarterly numbers"
KEY = "sk-live-abcdefghijklmnopqrstuvwxyz0123"
REQUEST_FIELDS = {
    "ts",
    "level",
    "logger",
    "msg",
    "event",
    "request_id",
    "operation",
    "stream",
    "requested_model",
    "alias",
    "provider",
    "model",
    "status",
    "attempts",
    "latency_ms",
    "ttft_ms",
    "overhead_ms",
}


async def test_a_full_run_logs_json_lines_with_request_fields_and_no_prompt_or_secret(make_upstream, spawn_gateway):
    good = await make_upstream("openai", api_key=KEY)
    wrong = await make_upstream("forii", api_key="sk-other-account-key-000000")  # answers 401 quoting the key it was sent
    good.then(Behaviour(text=f"echo: {PROMPT}"), Behaviour(status=503), Behaviour(text=f"again: {PROMPT}"))
    config = {
        "providers": {"good": {**provider_entry(good), "api_key": "${PROVIDER_KEY}"}, "wrong": {**provider_entry(wrong), "api_key": "${PROVIDER_KEY}"}},
        "models": {
            # The 503 moves the streamed request on to the second target: two attempts on one line.
            "chat": {"targets": [{"provider": "good", "model": "m"}, {"provider": "good", "model": "m2"}]},
            "broken": {"targets": [{"provider": "wrong", "model": "forii/x"}]},
        },
    }
    gp = await spawn_gateway(config, env={**JSON_LOGS, "PROVIDER_KEY": KEY})
    async with aiohttp.ClientSession() as session:
        assert (await chat(session, gp.url, request_id="plain", text=PROMPT))[0] == 200
        assert (await chat(session, gp.url, request_id="retried", text=PROMPT, stream=True))[0] == 200
        async with session.post(
            gp.url + "/v1/chat/completions", headers={"x-request-id": "rejected"}, json={"model": "broken", "messages": [{"role": "user", "content": PROMPT}]}
        ) as r:
            assert r.status >= 400
        await wait_for(lambda: len(events(gp, "request")) == 3)
    gp.send_signal(signal.SIGTERM)
    assert await gp.wait_exit() == 0
    assert gp.reader is not None
    await gp.reader

    lines = json_lines(gp)  # fails on any line that is not JSON
    assert {"started", "draining", "shutdown"} <= {line.get("event") for line in lines}
    requests = {line["request_id"]: line for line in events(gp, "request")}
    for line in requests.values():
        assert REQUEST_FIELDS <= line.keys(), REQUEST_FIELDS - line.keys()
    plain, retried, rejected = requests["plain"], requests["retried"], requests["rejected"]
    assert (plain["alias"], plain["provider"], plain["model"], plain["status"], plain["attempts"]) == ("chat", "good", "m", 200, 1)
    assert plain["prompt_tokens"] == 20 and plain["completion_tokens"] == 5 and plain["total_tokens"] == 25
    assert (retried["attempts"], retried["model"], retried["stream"], len(retried["tried"])) == (2, "m2", True, 2)
    assert rejected["status"] >= 400 and rejected["error"] and rejected["tried"]

    everything = "\n".join(gp.output)
    assert "zebra-prompt-4821" not in everything
    for fragment in (KEY, KEY[:8], KEY[-6:]):
        assert fragment not in everything


def test_bodies_are_logged_only_when_enabled():
    record = RequestRecord(request_id="r1", operation="chat", stream=False, requested_models=["chat"], extra={"prompt": [{"content": PROMPT}]})
    record.finish(200)
    assert "prompt" not in request_fields(record)
    assert request_fields(record, bodies=True)["prompt"] == [{"content": PROMPT}]


@pytest.mark.parametrize("formatter", [JsonFormatter(), TextFormatter()])
def test_other_lines_are_scrubbed_of_known_keys(formatter: logging.Formatter):
    remember_secrets([Secret(KEY)])
    try:
        raise RuntimeError(f"upstream said: bad key {KEY}")
    except RuntimeError:
        import sys

        record = logging.LogRecord("router", logging.ERROR, __file__, 1, "call failed with %s", (KEY,), sys.exc_info())
    setattr(record, FIELDS, {"detail": f"key={KEY}"})
    text = formatter.format(record)
    assert KEY not in text and KEY[:8] not in text and "***" in text
    if isinstance(formatter, JsonFormatter):
        assert orjson.loads(text)["msg"].startswith("call failed with")


def test_request_lines_are_not_built_when_the_level_is_off(caplog):
    from router.logs import RequestLog

    listener = RequestLog()
    record = RequestRecord(request_id="quiet", operation="chat", stream=False, requested_models=["c"])
    record.finish(200)
    with caplog.at_level(logging.WARNING, logger=ACCESS_LOGGER):
        listener(record)
    assert not [r for r in caplog.records if r.name == ACCESS_LOGGER]
    with caplog.at_level(logging.INFO, logger=ACCESS_LOGGER):
        listener(record)
    lines = [r for r in caplog.records if r.name == ACCESS_LOGGER]
    assert len(lines) == 1 and getattr(lines[0], FIELDS)["request_id"] == "quiet"
