"""The request path without HTTP: an Exchange driven directly, upstreams served by the in-process mock transport.

The end-to-end tests (real sockets, fake upstream servers) show what a
client sees; these show what the pipeline decides and records, rung by rung,
with nothing between the test and the Exchange but the mock transport.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import orjson
import pytest
from aiohttp import web

from router.accounting.record import RequestRecord
from router.app import create_app
from router.config import RouteTable, parse_table
from router.errors import AllCandidatesFailed, InvalidRequest, UpstreamClientError
from router.keys import GATEWAY, REQUEST_ID
from router.operations import Operation
from router.outcome import AttemptKind, HealthEffect
from router.pipeline import Exchange


class Request(dict):  # type: ignore[type-arg]
    """What an Exchange reads from aiohttp's request: the app, the body, the headers, per-request keys."""

    def __init__(self, app: Any, body: dict[str, Any]) -> None:
        super().__init__({REQUEST_ID: "req-1"})
        self.app = app
        self._raw = orjson.dumps(body)
        self.content_length = len(self._raw)
        self.headers: dict[str, str] = {}

    async def read(self) -> bytes:
        return self._raw


def table(targets: list[dict[str, Any]], providers: dict[str, Any]) -> RouteTable:
    return parse_table({"auth": {"enabled": False}, "providers": providers, "models": {"chat": {"targets": targets}}})


@pytest.fixture
async def gateway_for() -> AsyncIterator[Any]:
    started: list[web.AppRunner] = []

    async def make(t: RouteTable) -> tuple[Any, list[RequestRecord]]:
        app = create_app(t)
        gateway = app[GATEWAY]
        runner = web.AppRunner(app)  # opens every resource (cleanup_ctx) without listening on a socket
        await runner.setup()
        started.append(runner)
        records: list[RequestRecord] = []
        gateway.record_listeners.append(records.append)
        return app, records

    yield make
    for runner in started:
        await runner.cleanup()


def chat(**extra: Any) -> dict[str, Any]:
    return {"model": "chat", "messages": [{"role": "user", "content": "hello there"}], **extra}


PRICE = {"input": 1, "output": 2}


async def test_a_failed_target_is_followed_by_the_next_and_every_reader_gets_typed_outcomes(gateway_for):
    providers = {"bad": {"kind": "mock", "options": {"fail_every": 1, "fail_status": 503}}, "good": {"kind": "mock", "options": {"completion_tokens": 3}}}
    app, records = await gateway_for(table([{"provider": "bad", "model": "b", "price": PRICE}, {"provider": "good", "model": "g", "price": PRICE}], providers))
    response = await Exchange(Request(app, chat()), Operation.CHAT).run()
    assert response.status == 200
    assert response.headers["x-router-trace"] == "bad/b=status 503, good/g=ok"
    assert response.headers["x-router-attempts"] == "2"
    (record,) = records
    assert [(a.kind, a.health) for a in record.attempts] == [(AttemptKind.FAILED, HealthEffect.FAIL), (AttemptKind.OK, HealthEffect.OK)]
    assert record.status == 200 and record.provider == "good" and record.model == "g"
    usage = record.attempts[1].usage
    assert usage is not None and usage.completion_tokens == 3
    # Priced once, when the usage was known: $1/M input, $2/M output, in micro-dollars per token.
    assert record.attempts[1].cost == Decimal(usage.prompt_tokens * 1 + usage.completion_tokens * 2)
    assert record.cost == record.attempts[1].cost


async def test_a_callers_400_is_returned_as_is_never_failed_over_and_leaves_health_alone(gateway_for):
    providers = {"strict": {"kind": "mock", "options": {"fail_every": 1, "fail_status": 400}}, "good": {"kind": "mock"}}
    app, records = await gateway_for(table([{"provider": "strict", "model": "s"}, {"provider": "good", "model": "g"}], providers))
    with pytest.raises(UpstreamClientError) as caught:
        await Exchange(Request(app, chat()), Operation.CHAT).run()
    assert caught.value.status == 400
    assert caught.value.headers["x-router-trace"] == "strict/s=status 400"
    (record,) = records
    assert [(a.kind, a.health) for a in record.attempts] == [(AttemptKind.FAILED, HealthEffect.NEUTRAL)]
    assert record.status == 400 and record.error_class == "UpstreamClientError"


async def test_when_every_target_fails_the_error_names_each_attempt(gateway_for):
    providers = {
        "a": {"kind": "mock", "options": {"fail_every": 1, "fail_status": 500}},
        "b": {"kind": "mock", "options": {"fail_every": 1, "fail_status": 502}},
    }
    app, records = await gateway_for(table([{"provider": "a", "model": "x"}, {"provider": "b", "model": "y"}], providers))
    with pytest.raises(AllCandidatesFailed) as caught:
        await Exchange(Request(app, chat()), Operation.CHAT).run()
    assert caught.value.status == 502
    assert [line.split(":")[0] for line in caught.value.lines] == ["chat -> a/x", "chat -> b/y"]
    assert "status 500" in caught.value.lines[0] and "status 502" in caught.value.lines[1]
    assert records[0].status == 502 and records[0].tries == 2


async def test_an_absurd_max_tokens_is_a_400_naming_the_field_and_still_one_record(gateway_for):
    app, records = await gateway_for(table([{"provider": "m", "model": "x"}], {"m": {"kind": "mock"}}))
    with pytest.raises(InvalidRequest) as caught:
        await Exchange(Request(app, chat(max_tokens=2**63 - 1)), Operation.CHAT).run()
    assert caught.value.status == 400 and caught.value.param == "max_tokens"
    assert "at most" in caught.value.message
    assert [r.status for r in records] == [400]
    assert records[0].attempts == []  # refused before any candidate was considered


async def test_the_carrier_is_chosen_by_the_adapters_data_and_a_test_can_register_its_own(gateway_for):
    from providers import ADAPTERS
    from providers.mock import MockResponse

    assert {kind: adapter.transport for kind, adapter in ADAPTERS.items()}["mock"] == "mock"
    assert all(adapter.transport == "http" for kind, adapter in ADAPTERS.items() if kind != "mock")
    app, records = await gateway_for(table([{"provider": "m", "model": "x"}], {"m": {"kind": "mock"}}))
    calls: list[tuple[str, bytes]] = []

    class Recording:
        is_open = True

        async def open(self) -> None: ...

        async def close(self) -> None: ...

        async def send(self, provider: Any, call: Any, request_id: str) -> MockResponse:
            calls.append((provider.name, call.body))
            answer = {
                "id": "r",
                "object": "chat.completion",
                "created": 1,
                "model": "x",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "recorded"}, "finish_reason": "stop"}],
            }
            return MockResponse(200, orjson.dumps(answer))

    app[GATEWAY].transport.register("mock", Recording())
    response = await Exchange(Request(app, chat()), Operation.CHAT).run()
    assert orjson.loads(response.body)["choices"][0]["message"]["content"] == "recorded"
    assert [name for name, _ in calls] == ["m"] and orjson.loads(calls[0][1])["model"] == "x"
    assert records[0].usage is not None and records[0].usage.estimated  # no usage reported: an estimate, marked
