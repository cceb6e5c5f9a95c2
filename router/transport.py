"""All upstream I/O, through the transport each adapter names: HTTP (one pooled aiohttp session) or the in-process mock.

``Transport.send`` takes what an adapter built and returns an
``UpstreamResponse`` (status, headers, whole body or SSE events).  Which
transport carries a call is data: ``Adapter.transport`` names one of
``Transport.carriers`` (``http``, ``mock``; a test may register its own), so
no code asks which kind a provider is.  Every library exception is mapped
here to the most specific ``UpstreamError``, so the pipeline above never
sees aiohttp's.  Secrets are read only here, where the auth header is set.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Protocol

import aiohttp

from providers import ADAPTERS
from providers.base import UpstreamCall
from providers.mock import MockUpstream
from router.config import Provider, ServerSettings
from router.errors import UpstreamConnectError, UpstreamConnectTimeout, UpstreamProtocolError, UpstreamTooLarge
from router.sse import iter_event_batches


class UpstreamResponse(Protocol):
    status: int

    @property
    def headers(self) -> Mapping[str, str]: ...

    async def read(self) -> bytes: ...

    def event_batches(self) -> AsyncIterator[list[bytes]]: ...

    def close(self) -> None: ...


def _describe(provider: Provider, exc: BaseException) -> str:
    detail = str(exc) or type(exc).__name__
    # aiohttp puts the host in its messages; it is not a secret, the key never is in them.
    return f"{provider.name}: {detail}"


class HttpResponse:
    __slots__ = ("_response", "_provider", "_limit", "status", "headers")

    def __init__(self, response: aiohttp.ClientResponse, provider: Provider, limit: int) -> None:
        self._response = response
        self._provider = provider
        self._limit = limit  # server.max_response_bytes: a whole answer is held in memory, so it is bounded
        self.status = response.status
        self.headers = response.headers

    async def read(self) -> bytes:
        try:
            return await self._read_bounded()
        except aiohttp.ClientError as exc:
            raise UpstreamProtocolError(_describe(self._provider, exc)) from exc
        finally:
            self._response.release()

    async def _read_bounded(self) -> bytes:
        limit, length = self._limit, self._response.content_length
        if length is not None and length > limit:
            self._response.close()
            raise UpstreamTooLarge(f"{self._provider.name}: its answer is {length} bytes; server.max_response_bytes is {limit}")
        body = bytearray()
        async for chunk in self._response.content.iter_any():
            body += chunk
            if len(body) > limit:
                self._response.close()  # read no further: the rest of the answer is never held
                raise UpstreamTooLarge(f"{self._provider.name}: its answer is over server.max_response_bytes ({limit} bytes)")
        return bytes(body)

    async def event_batches(self) -> AsyncIterator[list[bytes]]:
        try:
            async for batch in iter_event_batches(self._response.content.iter_any()):
                yield batch
        except aiohttp.ClientError as exc:
            raise UpstreamProtocolError(_describe(self._provider, exc)) from exc

    def close(self) -> None:
        # close(), not release(): a half-read stream must not go back to the pool,
        # and closing is what tells the upstream the client has gone.
        self._response.close()


class Carrier(Protocol):
    """One way to reach upstreams: opened with the app, closed with it."""

    is_open: bool

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def send(self, provider: Provider, call: UpstreamCall, request_id: str) -> UpstreamResponse: ...


class HttpCarrier:
    """Upstreams on the network: one pooled keep-alive aiohttp session for every provider."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None
        self.max_response_bytes = 8 * 1024 * 1024  # the live table's server.max_response_bytes (Transport.follow)

    @property
    def is_open(self) -> bool:
        return self._session is not None and not self._session.closed

    async def open(self) -> None:
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=256, ttl_dns_cache=300, keepalive_timeout=30)
        # No cookie jar, no auto-decompression surprises: a proxy keeps nothing between calls.
        self._session = aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar(), raise_for_status=False)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send(self, provider: Provider, call: UpstreamCall, request_id: str) -> UpstreamResponse:
        assert self._session is not None, "transport used before open()"
        headers = {"Content-Type": "application/json", "Accept": "text/event-stream" if call.stream else "application/json", "X-Request-Id": request_id}
        headers.update(provider.headers)
        if provider.api_key:
            headers.update(ADAPTERS[provider.kind].auth_headers(provider.api_key.reveal()))
        headers.update(call.headers)
        # Only the connect timeout is aiohttp's: first token, idle and total are the pipeline's (router/pipeline.py).
        timeout = aiohttp.ClientTimeout(total=None, connect=call.connect_timeout, sock_read=None)
        try:
            response = await self._session.post(provider.base_url + call.path, data=call.body, headers=headers, timeout=timeout)
        except TimeoutError as exc:
            raise UpstreamConnectTimeout(f"{provider.name}: no connection within {call.connect_timeout:g} s (timeouts.connect)") from exc
        except aiohttp.ClientConnectorError as exc:
            raise UpstreamConnectError(f"{provider.name}: cannot connect ({exc.os_error.strerror or exc.os_error})") from exc
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
            raise UpstreamConnectError(_describe(provider, exc)) from exc
        except aiohttp.ClientError as exc:
            raise UpstreamProtocolError(_describe(provider, exc)) from exc
        return HttpResponse(response, provider, self.max_response_bytes)


class MockCarrier:
    """The built-in mock provider: answered in the process, one ``MockUpstream`` per provider entry."""

    is_open = True

    def __init__(self) -> None:
        self._mocks: dict[str, MockUpstream] = {}

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def send(self, provider: Provider, call: UpstreamCall, request_id: str) -> UpstreamResponse:
        mock = self._mocks.get(provider.name)
        if mock is None:
            mock = self._mocks[provider.name] = MockUpstream(provider.options)
        return await mock.send(call)


class Transport:
    """Every carrier, by name; a call goes out on the one its provider's adapter names."""

    def __init__(self) -> None:
        self.http = HttpCarrier()
        self.carriers: dict[str, Carrier] = {"http": self.http, "mock": MockCarrier()}

    def follow(self, server: ServerSettings) -> None:
        """Take the limits of a (new) route table."""
        self.http.max_response_bytes = server.max_response_bytes

    def register(self, name: str, carrier: Carrier) -> None:
        self.carriers[name] = carrier

    @property
    def is_open(self) -> bool:
        return all(carrier.is_open for carrier in self.carriers.values())

    async def open(self) -> None:
        for carrier in self.carriers.values():
            await carrier.open()

    async def close(self) -> None:
        for carrier in self.carriers.values():
            await carrier.close()

    async def send(self, provider: Provider, call: UpstreamCall, request_id: str) -> UpstreamResponse:
        return await self.carriers[ADAPTERS[provider.kind].transport].send(provider, call, request_id)
