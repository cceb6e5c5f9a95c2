"""A counting TCP proxy in front of the real Redis: every command a client sends is recorded, then forwarded unchanged.

Lets a test count the Redis round trips a request costs (redis-py sends one
command, or one pipeline, and waits for its answer before the next on the
same connection).  It parses just enough RESP (arrays of bulk strings, what
redis-py sends) to name each command and its first argument.
"""

from __future__ import annotations

import asyncio
import contextlib


class RedisProxy:
    def __init__(self, upstream_port: int = 6379) -> None:
        self.upstream_port = upstream_port
        self.commands: list[tuple[str, str]] = []  # (COMMAND, first argument), in arrival order
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"redis://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/0"

    async def start(self) -> RedisProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        redis_r, redis_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        back = asyncio.create_task(self._pipe(redis_r, client_w))
        self._tasks.add(back)
        try:
            while True:
                command = await self._read_command(client_r)
                if command is None:
                    break
                raw, name, first = command
                self.commands.append((name, first))
                redis_w.write(raw)
                await redis_w.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            back.cancel()
            redis_w.close()
            client_w.close()

    @staticmethod
    async def _read_command(reader: asyncio.StreamReader) -> tuple[bytes, str, str] | None:
        header = await reader.readline()
        if not header:
            return None
        assert header.startswith(b"*"), header  # redis-py sends commands as RESP arrays
        raw, parts = bytearray(header), []
        for _ in range(int(header[1:])):
            length_line = await reader.readline()
            data = await reader.readexactly(int(length_line[1:]) + 2)
            raw += length_line + data
            parts.append(data[:-2].decode("utf-8", "replace"))
        return bytes(raw), parts[0].upper(), parts[1] if len(parts) > 1 else ""

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.CancelledError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
