"""Provider adapters, registered in exactly one place: ``ADAPTERS``.

Adding a provider is one module in this folder and one line here.
"""

from __future__ import annotations

from providers.anthropic import AnthropicAdapter
from providers.azure import AzureAdapter
from providers.base import Adapter
from providers.forefront import ForefrontAdapter
from providers.gemini import GeminiAdapter
from providers.interactive import InteractiveAdapter
from providers.mock import MockAdapter
from providers.openai import OpenAIAdapter

ADAPTERS: dict[str, Adapter] = {
    adapter.kind: adapter
    for adapter in (OpenAIAdapter(), ForefrontAdapter(), InteractiveAdapter(), MockAdapter(), AnthropicAdapter(), AzureAdapter(), GeminiAdapter())
}

__all__ = ["ADAPTERS", "Adapter"]
