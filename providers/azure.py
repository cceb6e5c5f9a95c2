"""Azure OpenAI: OpenAI's API behind per-deployment URLs, an ``api-version`` query and an ``api-key`` header.

    POST {base_url}/openai/deployments/{deployment}/chat/completions?api-version=...
                                                   /completions
                                                   /embeddings

``base_url`` is the resource's endpoint (``https://<resource>.openai.azure.com``);
a target's ``model`` is the deployment's name (the deployment, not the body,
decides which model answers; the body's ``model`` is set to it all the same,
Azure ignores it).  The api-version is the provider's
``options.api_version`` (default ``DEFAULT_API_VERSION``, the GA version
that streams usage with ``stream_options``); an adapter sees options only
once the gateway hands them over, through ``Adapter.configured``.

Answers and streams are OpenAI's, checked and labelled by the OpenAI helpers.
Azure adds ``prompt_filter_results`` (on the answer, or on a first stream
chunk with no choices) and per-choice ``content_filter_results``: both are
kept for the client; ``finish_reason: content_filter`` passes through.
Errors are ``{"error": {"code", "message"}}``: the base reader takes the message.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import cache
from typing import Any
from urllib.parse import quote

import orjson

from providers.base import Adapter, Capabilities, ResponseContext, StreamTranslator, UpstreamCall, Usage
from providers.openai import PATHS, OpenAIStream, openai_payload, translate_openai
from providers.operations import Operation

DEFAULT_API_VERSION = "2024-10-21"
# 2024-10-21, 2025-01-01-preview: what Azure's versions look like; anything else is a typo caught at load.
_API_VERSION = re.compile(r"^\d{4}-\d{2}-\d{2}(-preview)?$")


class AzureAdapter(Adapter):
    kind = "azure"
    capabilities = Capabilities(
        operations=frozenset({Operation.CHAT, Operation.COMPLETION, Operation.EMBEDDING}),
        streams=frozenset({Operation.CHAT, Operation.COMPLETION}),
    )
    default_base_url = None  # every resource has its own endpoint

    def __init__(self, api_version: str = DEFAULT_API_VERSION) -> None:
        self.api_version = api_version

    def configured(self, options: Mapping[str, Any]) -> AzureAdapter:
        return _with_version(api_version(options))

    def auth_headers(self, api_key: str) -> dict[str, str]:
        return {"api-key": api_key}

    def build_call(self, op: Operation, body: dict[str, Any], model: str, stream: bool) -> UpstreamCall:
        path = f"/openai/deployments/{quote(model, safe='')}{PATHS[op]}?api-version={quote(self.api_version)}"
        return UpstreamCall(path, orjson.dumps(openai_payload(body, model, stream and op in self.capabilities.streams)), stream)

    def translate_response(self, op: Operation, payload: dict[str, Any], ctx: ResponseContext) -> tuple[dict[str, Any], Usage | None]:
        return translate_openai(op, payload, ctx)

    def stream_translator(self, op: Operation, ctx: ResponseContext) -> StreamTranslator:
        return OpenAIStream(ctx)


def api_version(options: Mapping[str, Any]) -> str:
    """``options.api_version``, or the default; ``ValueError`` for one that cannot be an Azure api-version."""
    version = options.get("api_version", DEFAULT_API_VERSION)
    if not isinstance(version, str) or not _API_VERSION.match(version):
        raise ValueError(f"options.api_version must look like {DEFAULT_API_VERSION} or 2025-01-01-preview, got {version!r}")
    return version


@cache
def _with_version(version: str) -> AzureAdapter:
    """One adapter per api-version in use: configured per call, built once."""
    return AzureAdapter(version)
