"""Embeddings on the provider side: the OpenAI and Azure adapters JSON in/JSON out, the fakes, and the mock called directly.

The gateway's POST /v1/embeddings is the request path's; until it exists the
mock (an in-process upstream, not a network stand-in) is called through
``MockUpstream.send`` with what the adapter built, as the transport would.
"""

from __future__ import annotations

import base64
import copy
import math
import re
import struct

import aiohttp
import orjson
import pytest

from providers import ADAPTERS
from providers.base import BadAnswer, ResponseContext, check_embeddings, estimate_prompt_tokens
from providers.mock import DEFAULT_DIMENSIONS, MockUpstream
from providers.operations import Operation
from tests.fakes.upstream import Behaviour

EMBED = {"model": "alias", "input": ["the quick brown fox", "jumps"], "route": {"x": 1}}
ANSWER = {
    "object": "list",
    "data": [{"object": "embedding", "index": 0, "embedding": [0.1, -0.2]}, {"object": "embedding", "index": 1, "embedding": "zczMPc3MTL4="}],
    "model": "text-embedding-3-small",
    "usage": {"prompt_tokens": 7, "total_tokens": 7},
}


def ctx() -> ResponseContext:
    return ResponseContext(provider="p", model="up-model", request_id="rid", created=1700000000)


def floats(encoded: str) -> list[float]:
    raw = base64.b64decode(encoded)
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


@pytest.mark.parametrize("kind", ["openai", "azure", "mock"])
def test_embedding_calls_pass_the_body_through_with_the_model_replaced(kind):
    before = copy.deepcopy(EMBED)
    call = ADAPTERS[kind].build_call(Operation.EMBEDDING, {**EMBED, "dimensions": 3, "encoding_format": "base64"}, "emb-model", False)
    assert call.path.endswith("/embeddings") or "/embeddings?" in call.path
    assert orjson.loads(call.body) == {"model": "emb-model", "input": EMBED["input"], "dimensions": 3, "encoding_format": "base64"}
    assert not call.stream and EMBED == before


@pytest.mark.parametrize("kind", ["openai", "azure"])
def test_an_embedding_answer_is_labelled_and_its_usage_is_prompt_tokens_only(kind):
    payload = copy.deepcopy(ANSWER)
    payload["usage"]["completion_tokens"] = 99  # nothing is generated: never billed as output
    out, usage = ADAPTERS[kind].translate_response(Operation.EMBEDDING, payload, ctx())
    assert out["provider"] == "p" and out["model"] == "text-embedding-3-small" and out["data"] == ANSWER["data"]
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens, usage.total) == (7, 0, 7)
    assert out["usage"] == {"prompt_tokens": 7, "total_tokens": 7}


BAD = [
    ([], "not an object"),
    ({"object": "list"}, "no data list"),
    ({"data": {}}, "not a list"),
    ({"data": []}, "empty"),
    ({"data": ["x"]}, "data[0] is a string"),
    ({"data": [{"object": "chat", "index": 0, "embedding": [1]}]}, "object is not 'embedding'"),
    ({"data": [{"object": "embedding", "index": "0", "embedding": [1]}]}, "index"),
    ({"data": [{"object": "embedding", "index": 0, "embedding": [1, "2"]}]}, "other than finite numbers"),
    ({"data": [{"object": "embedding", "index": 0, "embedding": [True]}]}, "other than finite numbers"),
    ({"data": [{"object": "embedding", "index": 0, "embedding": {}}]}, "not a list of numbers or a base64 string"),
    ({"data": [{"object": "embedding", "index": 0}]}, "null, not a list"),
]


@pytest.mark.parametrize(("payload", "words"), BAD)
def test_a_malformed_embedding_answer_is_a_bad_answer(payload, words):
    with pytest.raises(BadAnswer, match=re.escape(words)):
        check_embeddings(payload)
    if isinstance(payload, dict):
        with pytest.raises(BadAnswer):
            ADAPTERS["openai"].translate_response(Operation.EMBEDDING, payload, ctx())


def test_nonsense_embedding_usage_is_rejected_not_charged():
    c = ctx()
    out, usage = ADAPTERS["openai"].translate_response(Operation.EMBEDDING, {**copy.deepcopy(ANSWER), "usage": {"prompt_tokens": -3}}, c)
    assert usage is None and c.usage_rejected and "usage" not in out


def test_interactive_and_forefront_do_not_embed():
    for kind in ("interactive", "forefront", "gemini"):
        assert Operation.EMBEDDING not in ADAPTERS[kind].capabilities.operations, kind
    for kind in ("openai", "azure", "mock"):
        caps = ADAPTERS[kind].capabilities
        assert Operation.EMBEDDING in caps.operations and Operation.EMBEDDING not in caps.streams, kind


def test_an_embedding_prompt_is_estimated_from_its_input():
    assert estimate_prompt_tokens({"input": "x" * 40}) == 10
    assert estimate_prompt_tokens({"input": ["x" * 40, "y"]}) == 11  # every input is at least a token
    assert estimate_prompt_tokens({"input": [1, 2, 3]}) == 3  # token ids are counted, not guessed
    assert estimate_prompt_tokens({"input": [[1, 2], [3, 4, 5]]}) == 5


# -- the mock, called as the transport calls it ---------------------------


async def mock_embed(body, options=None):
    call = ADAPTERS["mock"].build_call(Operation.EMBEDDING, body, "mock-embed", False)
    response = await MockUpstream(options or {}).send(call)
    return response.status, orjson.loads(await response.read())


async def test_the_mock_embeds_deterministically_in_unit_vectors():
    status, first = await mock_embed({"model": "e", "input": ["alpha", "beta"]})
    _, again = await mock_embed({"model": "e", "input": ["alpha"]})
    assert status == 200 and first["object"] == "list" and first["model"] == "mock-embed"
    vectors = [item["embedding"] for item in first["data"]]
    assert [item["index"] for item in first["data"]] == [0, 1]
    assert all(len(v) == DEFAULT_DIMENSIONS for v in vectors)
    assert all(math.isclose(math.sqrt(sum(x * x for x in v)), 1.0, rel_tol=1e-6) for v in vectors)
    assert again["data"][0]["embedding"] == vectors[0] and vectors[0] != vectors[1]
    # What the adapter checks, the mock passes; usage is the gateway's own estimate.
    out, usage = ADAPTERS["mock"].translate_response(Operation.EMBEDDING, first, ctx())
    assert usage is not None and usage.prompt_tokens == estimate_prompt_tokens({"input": ["alpha", "beta"]}) == 2 and usage.completion_tokens == 0


async def test_the_mock_honours_dimensions_base64_and_token_lists():
    _, floats_answer = await mock_embed({"model": "e", "input": [[1, 2, 3], "text"], "dimensions": 5})
    _, b64_answer = await mock_embed({"model": "e", "input": [[1, 2, 3], "text"], "dimensions": 5, "encoding_format": "base64"})
    assert [len(item["embedding"]) for item in floats_answer["data"]] == [5, 5]
    decoded = [floats(item["embedding"]) for item in b64_answer["data"]]
    assert decoded == [item["embedding"] for item in floats_answer["data"]]  # float32 both ways: the same numbers
    assert floats_answer["usage"] == {"prompt_tokens": 4, "total_tokens": 4}  # 3 token ids + one short string


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": None}, "input"),
        ({"input": []}, "input"),
        ({"input": ""}, "input"),
        ({"input": [1, "a", None]}, "input"),
        ({"input": "a", "dimensions": 0}, "dimensions"),
        ({"input": "a", "dimensions": True}, "dimensions"),
        ({"input": "a", "encoding_format": "int8"}, "encoding_format"),
    ],
)
async def test_the_mock_refuses_what_openai_refuses(body, param):
    status, answer = await mock_embed({"model": "e", **body})
    assert status == 400 and answer["error"]["param"] == param


async def test_the_mock_injects_a_status_from_an_embedding_input():
    status, answer = await mock_embed({"model": "e", "input": ["[mock-status 429] please"]})
    assert status == 429 and "429" in answer["error"]["message"]


# -- the fakes' embeddings, through the adapters ----------------------------


@pytest.mark.parametrize("kind", ["openai", "azure"])
async def test_the_fakes_embeddings_pass_the_adapters_checks(kind, make_upstream):
    up = await make_upstream(kind)
    adapter = ADAPTERS[kind]
    auth = adapter.auth_headers(up.api_key)
    async with aiohttp.ClientSession(headers={**auth, "Content-Type": "application/json"}) as s:
        for fmt in ("float", "base64"):
            call = adapter.build_call(Operation.EMBEDDING, {"model": "a", "input": ["one", "two"], "dimensions": 3, "encoding_format": fmt}, "emb", False)
            async with s.post(up.base_url + call.path, data=call.body) as r:
                assert r.status == 200, await r.text()
                payload = await r.json()
            out, usage = adapter.translate_response(Operation.EMBEDDING, payload, ctx())
            assert usage is not None and usage.prompt_tokens == 6 and len(out["data"]) == 2
            first = out["data"][0]["embedding"]
            assert len(first if fmt == "float" else floats(first)) == 3
        up.then(Behaviour(raw=b'{"data": [{"object": "embedding", "index": 0}]}'))
        async with s.post(up.base_url + call.path, data=call.body) as r:
            payload = await r.json()
        with pytest.raises(BadAnswer):
            adapter.translate_response(Operation.EMBEDDING, payload, ctx())
