"""Structured logs: the formatters, the per-request line, and the process's log set-up.

    configure_logging(settings)   root logger -> queue -> one thread that formats and writes
    log_event(logger, msg, **f)   a start-up / reload / state-change line with fields, e.g.
                                  log_event(log, "circuit opened", logging.WARNING, event="circuit_open", target=key)
    RequestLog                    a record listener: one line per finished request

Formats: ``json`` (one object per line, for collectors) or ``text`` (for a
terminal).  ``ROUTER_LOG_LEVEL`` and ``ROUTER_LOG_FORMAT`` override the
``logging:`` section of routes.yaml, because operators set those per
environment, not per route table.

What never appears: a prompt or a completion (unless ``logging.bodies: true``,
and then only the prompt), and a secret.  Request lines are built only from
ids, names and numbers; every other line (messages, tracebacks) is passed
through ``router.secrets.scrub`` with the keys of the current table.

The hot path only builds a dict and appends a LogRecord to a batch; every
50 ms the batch goes to the queue's thread, which formats it and writes it
with one write, so a slow log pipe never stalls the event loop and the
writer wakes 20 times a second rather than once per request.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import logging.handlers
import os
import queue
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from router.accounting.record import RequestRecord
from router.config import LOG_FORMATS, LOG_LEVELS, LoggingSettings
from router.secrets import Secret, scrub

ACCESS_LOGGER = "router.access"
FIELDS = "fields"  # the LogRecord attribute that carries structured fields: extra={"fields": {...}}

# Record attributes other branches add (auth: key_id, team; ledger: cost).
# Read with getattr so this listener works before and after they land.
_OPTIONAL_RECORD_FIELDS = ("key_id", "team", "cost_micro_usd")


def log_event(logger: logging.Logger, message: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log ``message`` with structured ``fields`` (JSON keys, or key=value in text)."""
    if logger.isEnabledFor(level):
        logger.log(level, message, extra={FIELDS: fields})


class _Secrets:
    """Every provider key this process has served with: kept after a reload, since an old key can still be echoed."""

    def __init__(self) -> None:
        self.current: tuple[Secret, ...] = ()


KNOWN_SECRETS = _Secrets()


def remember_secrets(secrets: Iterable[Secret]) -> None:
    KNOWN_SECRETS.current = tuple({*KNOWN_SECRETS.current, *secrets})


def _iso(created: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{int(created % 1 * 1000):03d}Z"


def _scrubbed(text: str) -> str:
    return scrub(text, KNOWN_SECRETS.current)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {"ts": _iso(record.created), "level": record.levelname.lower(), "logger": record.name}
        fields: Mapping[str, Any] | None = getattr(record, FIELDS, None)
        if record.name == ACCESS_LOGGER and fields is not None:
            # Built from ids, names and numbers only (RequestLog): no scrub needed.
            line["msg"] = record.msg
            line.update(fields)
        else:
            line["msg"] = _scrubbed(record.getMessage())
            if fields:
                line.update(orjson.loads(_scrubbed(orjson.dumps(fields, default=str).decode())))
        if record.exc_info:
            line["exc"] = _scrubbed(self.formatException(record.exc_info))
        return orjson.dumps(line, default=str).decode()


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = f"{_iso(record.created)} {record.levelname} {record.name}: {record.getMessage()}"
        fields: Mapping[str, Any] | None = getattr(record, FIELDS, None)
        if fields:
            text += " " + " ".join(
                f"{k}={v if isinstance(v, (int, float)) else orjson.dumps(v, default=str).decode()}" for k, v in fields.items() if v is not None
            )
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text if record.name == ACCESS_LOGGER else _scrubbed(text)


BATCH_SECONDS = 0.05  # how long the event loop's lines wait to be handed to the writer together


class _QueueHandler(logging.handlers.QueueHandler):
    """Hands records to the writer thread in batches, one wake-up per 50 ms of lines.

    Waking the writer once per request line cost the event loop more than the
    line itself: every wake-up is a GIL hand-over between two busy threads
    (measured with ``python -m bench.ablation``).  Lines logged on the event
    loop's thread wait in ``_batch`` for a timer on that loop; a line from any
    other thread, or with no loop running, goes at once and takes the batch along.
    """

    def __init__(self, log_queue: queue.SimpleQueue[Any]) -> None:
        super().__init__(log_queue)
        self._batch: list[logging.LogRecord] = []
        self._batch_lock = threading.Lock()
        self._timer_loop: asyncio.AbstractEventLoop | None = None  # the loop whose timer will flush the batch

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        # The stock prepare() formats on the caller's thread; ours formats on the writer's.
        # Merge args now, though, so a mutable argument cannot change before it is written.
        if record.args:
            record.msg, record.args = record.getMessage(), None
        return record

    def enqueue(self, record: logging.LogRecord) -> None:
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        with self._batch_lock:
            self._batch.append(record)
            # A timer set on a loop that has since stopped will never fire: set one on this loop.
            needs_timer = self._timer_loop is not loop
            if needs_timer and loop is not None:
                self._timer_loop = loop
        if loop is None:
            self.flush_batch()
        elif needs_timer:
            loop.call_later(BATCH_SECONDS, self.flush_batch)

    def flush_batch(self) -> None:
        with self._batch_lock:
            batch, self._batch = self._batch, []
            self._timer_loop = None
        if batch:
            self.queue.put_nowait(batch)


class _BatchListener(logging.handlers.QueueListener):
    """Writes a batch of records with one write and one flush."""

    def handle(self, record: Any) -> None:
        if not isinstance(record, list):
            super().handle(record)
            return
        writer = self.handlers[0]
        assert isinstance(writer, logging.StreamHandler)
        lines = []
        for item in record:
            try:
                lines.append(writer.format(item))
            except Exception:  # one bad record must not lose the batch
                writer.handleError(item)
        if lines:
            writer.stream.write("\n".join(lines) + "\n")
            writer.flush()


class _LogSetup:
    listener: logging.handlers.QueueListener | None = None
    handler: _QueueHandler | None = None
    forced_level: str | None = None
    forced_format: str | None = None


_SETUP = _LogSetup()


def effective_settings(settings: LoggingSettings, env: Mapping[str, str] | None = None) -> tuple[str, str]:
    """(level, format) after the environment's overrides; a bad value in the environment is ignored with a warning."""
    env = os.environ if env is None else env
    level, fmt = settings.level, settings.format
    env_level, env_format = env.get("ROUTER_LOG_LEVEL", "").lower(), env.get("ROUTER_LOG_FORMAT", "").lower()
    if env_level in LOG_LEVELS:
        level = env_level
    if env_format in LOG_FORMATS:
        fmt = env_format
    return level, fmt


def configure_logging(settings: LoggingSettings, env: Mapping[str, str] | None = None) -> None:
    """Point the root logger at stderr through a queue, with the chosen format and level.  Safe to call again on reload."""
    env = os.environ if env is None else env
    level, fmt = effective_settings(settings, env)
    formatter: logging.Formatter = JsonFormatter() if fmt == "json" else TextFormatter()
    root = logging.getLogger()
    root.setLevel(level.upper())
    if _SETUP.listener is not None:
        for handler in _SETUP.listener.handlers:
            handler.setFormatter(formatter)
        return
    writer = logging.StreamHandler(sys.stderr)
    writer.setFormatter(formatter)
    log_queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    _SETUP.handler = _QueueHandler(log_queue)
    root.addHandler(_SETUP.handler)
    _SETUP.listener = _BatchListener(log_queue, writer)
    _SETUP.listener.start()
    atexit.register(stop_logging)
    for name in ("router", "aiohttp", "redis"):  # their own levels follow the root's
        logging.getLogger(name).setLevel(logging.NOTSET)
    for bad, value in (("ROUTER_LOG_LEVEL", env.get("ROUTER_LOG_LEVEL")), ("ROUTER_LOG_FORMAT", env.get("ROUTER_LOG_FORMAT"))):
        if value and value.lower() not in (LOG_LEVELS if bad == "ROUTER_LOG_LEVEL" else LOG_FORMATS):
            logging.getLogger("router").warning("ignoring %s=%r; expected one of %s", bad, value, LOG_LEVELS if bad == "ROUTER_LOG_LEVEL" else LOG_FORMATS)


def reconfigure_logging(settings: LoggingSettings) -> None:
    """Apply a reloaded table's ``logging:`` section, if this process set up its logging (the CLI does; tests do not)."""
    if _SETUP.listener is not None:
        configure_logging(settings)


def stop_logging() -> None:
    """Write out what is queued and stop the writer thread (at exit, after the last line)."""
    if _SETUP.handler is not None:
        _SETUP.handler.flush_batch()  # lines still waiting for their timer go first
    if _SETUP.listener is not None:
        _SETUP.listener.stop()
        _SETUP.listener = None


def _ms(start: float | None, end: float | None) -> float | None:
    return round((end - start) * 1000, 2) if start is not None and end is not None else None


class RequestLog:
    """The record listener that writes one line per finished request."""

    def __init__(self) -> None:
        self.logger = logging.getLogger(ACCESS_LOGGER)

    def __call__(self, record: RequestRecord) -> None:
        if not self.logger.isEnabledFor(logging.INFO):
            return
        # A record carries the prompt only when logging.bodies was on when the request came in.
        self.logger.info("request", extra={FIELDS: request_fields(record, bodies=True)})


def request_fields(record: RequestRecord, bodies: bool = False) -> dict[str, Any]:
    usage = record.usage
    fields: dict[str, Any] = {
        "event": "request",
        "request_id": record.request_id,
        "operation": record.operation,
        "stream": record.stream,
        "requested_model": record.requested_models[0] if record.requested_models else None,
        "alias": record.alias,
        "provider": record.provider,
        "model": record.model,
        "status": record.status,
        "attempts": record.tries,
        "latency_ms": _ms(record.started_mono, record.ended_mono),
        "ttft_ms": _ms(record.started_mono, record.first_token_mono),
        "overhead_ms": _ms(record.started_mono, record.upstream_started_mono),
    }
    for name in _OPTIONAL_RECORD_FIELDS:
        value = getattr(record, name, None)
        if value is not None:
            fields[name] = value
    if usage is not None:
        fields["prompt_tokens"] = usage.prompt_tokens
        fields["completion_tokens"] = usage.completion_tokens
        fields["total_tokens"] = usage.total
        if usage.cached_tokens:
            fields["cached_tokens"] = usage.cached_tokens
        if usage.reasoning_tokens:
            fields["reasoning_tokens"] = usage.reasoning_tokens
        if usage.estimated:
            fields["usage_estimated"] = True
    if record.error_class:
        fields["error"] = record.error_class
    if record.client_disconnected:
        fields["client_disconnected"] = True
    if record.stream_error is not None:  # sent as 200, broken mid-way: the line says so
        fields["outcome"] = record.status_label
        fields["stream_error"] = _scrubbed(record.stream_error)
    if record.status >= 400 or len(record.attempts) > 1 or record.stream_error is not None:
        # Outcomes can quote an upstream's error text; the pipeline scrubbed it, scrub again for keys of other accounts.
        fields["tried"] = [_scrubbed(a.line) for a in record.attempts]
    if bodies and "prompt" in record.extra:
        fields["prompt"] = record.extra["prompt"]
    return fields
