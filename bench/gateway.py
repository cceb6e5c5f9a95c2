"""A process under test, seen only from outside: spawned, probed over HTTP, its log read afterwards.

    Process      a child (the floor or ``llm-router serve``) with its log file, started and stopped
    start_gateway   write a scenario's routes.yaml and serve it, ready when ``/readyz`` says so
    scan_log     the gateway's log as records: ERROR lines, tracebacks, ``unhandled error``,
                 each attributed to the load window (by its timestamp) it was written in
    scrape       one ``/metrics`` scrape, as a Prometheus server would make it
    delete_prefix   the run's Redis keys, removed afterwards

The benchmark uses the gateway only through its CLI, its HTTP surface and
the files it writes, so it measures what an operator would run.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import orjson
import redis
import yaml

from bench.scenarios import Scenario

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# A deployment sets a pepper; the bench's own keeps the hashing on the path as it is in production.
BENCH_ENV = {"ROUTER_KEY_PEPPER": "bench-pepper-0123456789abcdef"}


def get(url: str, headers: dict[str, str] | None = None, timeout: float = 2.0) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def post(url: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json", **(headers or {})}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@dataclass
class Process:
    proc: subprocess.Popen[bytes]
    log: Path
    url: str = ""

    @classmethod
    def spawn(cls, cmd: list[str], log: Path, url: str = "", env: dict[str, str] | None = None) -> Process:
        # The scenario's logging: section decides the level; an operator's ROUTER_LOG_* in this shell must not.
        base = {k: v for k, v in os.environ.items() if k not in ("ROUTER_LOG_LEVEL", "ROUTER_LOG_FORMAT")}
        with log.open("wb") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=PROJECT_ROOT, env={**base, "PYTHONUNBUFFERED": "1", **(env or {})})
        return cls(proc, log, url)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"bench: {self.url} exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                if get(self.url + "/readyz")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise SystemExit(f"bench: {self.url} was not ready within {timeout}s:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> int | None:
        """SIGTERM (the gateway drains), then the exit code; killed if it does not exit within 15 s."""
        if self.proc.poll() is not None:
            return self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None


def start_gateway(scenario: Scenario, port: int, workdir: Path, *, workers: int = 1, label: str | None = None) -> Process:
    """Serve ``scenario`` on ``port`` from a routes.yaml in ``workdir``; returns once it is ready."""
    name = label or scenario.name
    config_path = workdir / f"routes-{name}.yaml"
    config_path.write_text(yaml.safe_dump(scenario.config, sort_keys=False))
    cmd = [sys.executable, "-m", "router", "serve", "--config", str(config_path), "--port", str(port)]
    if workers > 1:
        cmd += ["--workers", str(workers)]
    gateway = Process.spawn(cmd, workdir / f"gateway-{name}.log", f"http://127.0.0.1:{port}", BENCH_ENV)
    gateway.wait_ready()
    return gateway


def rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and its children (``--workers N`` forks), in MB."""
    pids = [pid]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                pids.append(int(entry.name))
    total_kb = 0
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kb += int(line.split()[1])
        except OSError:
            continue
    return round(total_kb / 1024, 1)


def delete_prefix(redis_url: str, prefix: str) -> int:
    """Delete the run's keys: the state store wraps its prefix in a hash tag ({prefix}:...), the ledger does not."""
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000)) + list(client.scan_iter(match=f"{{{prefix}}}*", count=1000))
        if keys:
            client.delete(*keys)
        return len(keys)
    finally:
        client.close()


# --------------------------------------------------------------------------
# Metrics

# Families worth printing beside a load figure when the gateway exports them (names as they are today or may become).
WATCHED_METRICS = ("state_degraded", "redis_errors", "overload")


def scrape(url: str) -> tuple[int, dict[str, float]]:
    """One scrape of ``/metrics``: the status and, summed over label sets, the watched families' samples."""
    try:
        status, body = get(url + "/metrics", timeout=5)
    except OSError:
        return 0, {}
    watched: dict[str, float] = {}
    if status == 200:
        for line in body.decode(errors="replace").splitlines():
            if line.startswith("#") or not line.strip():
                continue
            name = line.split("{", 1)[0].split(" ", 1)[0]
            if any(w in name for w in WATCHED_METRICS) and not name.endswith("_created"):
                try:
                    watched[name] = watched.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
                except ValueError:
                    continue
    return status, watched


# --------------------------------------------------------------------------
# The log

_TEXT_RECORD = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3})Z (DEBUG|INFO|WARNING|ERROR|CRITICAL) ")


@dataclass
class LogRecord:
    when: float | None  # unix seconds; None for output that is not a log record (a crash before logging starts)
    level: str
    text: str  # the whole record, continuation lines (a traceback) included

    @property
    def traceback(self) -> bool:
        return "Traceback (most recent call last)" in self.text or "unhandled error" in self.text

    @property
    def message(self) -> str:
        """The first line without its timestamp: what groups repeats of one complaint."""
        first = self.text.split("\n", 1)[0]
        return first[25:] if self.when is not None and not first.startswith("{") else first


def _parse_line(line: str) -> LogRecord | None:
    """A new record if ``line`` starts one (text or json format), else None (it continues the last)."""
    match = _TEXT_RECORD.match(line)
    if match:
        when = datetime.strptime(match.group(1), "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=UTC).timestamp()
        return LogRecord(when, match.group(2), line)
    if line.startswith('{"ts":'):
        try:
            data = orjson.loads(line)
            when = datetime.fromisoformat(str(data["ts"]).replace("Z", "+00:00")).timestamp()
        except (orjson.JSONDecodeError, KeyError, ValueError):
            return None
        text = str(data.get("msg", "")) + ("\n" + str(data["exc"]) if data.get("exc") else "")
        return LogRecord(when, str(data.get("level", "info")).upper(), text)
    return None


def read_records(log: Path) -> list[LogRecord]:
    records: list[LogRecord] = []
    for line in log.read_text(errors="replace").splitlines():
        record = _parse_line(line)
        if record is not None:
            records.append(record)
        elif records:
            records[-1].text += "\n" + line
        elif line.strip():
            records.append(LogRecord(None, "STDERR", line))
    return records


@dataclass
class LogScan:
    errors: int = 0  # ERROR and CRITICAL records
    tracebacks: int = 0  # records carrying a traceback or "unhandled error"
    problems: int = 0  # records that are either of the two above, each counted once
    warnings: int = 0
    info: int = 0  # at info these are mostly the request log, one line a request
    other: int = 0  # output that is not a log record at all (the CLI's "serving on ..."); a traceback in it still counts
    samples: dict[str, int] = field(default_factory=dict)  # distinct WARNING-or-worse messages and how often

    def add(self, record: LogRecord) -> None:
        if record.level in ("ERROR", "CRITICAL"):
            self.errors += 1
        elif record.level == "WARNING":
            self.warnings += 1
        elif record.level == "INFO":
            self.info += 1
        elif record.level == "STDERR":
            self.other += 1
        if record.traceback:
            self.tracebacks += 1
        if record.traceback or record.level in ("ERROR", "CRITICAL"):
            self.problems += 1
        if record.level in ("WARNING", "ERROR", "CRITICAL") or record.traceback:
            key = record.message[:200]
            self.samples[key] = self.samples.get(key, 0) + 1

    def top(self, n: int = 10) -> list[tuple[int, str]]:
        """The ``n`` most repeated WARNING-or-worse messages, as (count, message)."""
        return [(count, message) for message, count in sorted(self.samples.items(), key=lambda kv: -kv[1])[:n]]

    def to_json(self) -> dict[str, object]:
        return {
            "errors": self.errors,
            "tracebacks": self.tracebacks,
            "problems": self.problems,
            "warnings": self.warnings,
            "info": self.info,
            "other": self.other,
            "top": [{"count": n, "message": m} for n, m in self.top()],
        }


def scan_log(log: Path, windows: list[tuple[str, float, float]] | None = None) -> dict[str, LogScan]:
    """The log by load window ((name, start, end) in unix seconds; a name may cover several rounds),
    plus "all" and "outside" (start-up, pauses between windows, shutdown)."""
    windows = windows or []
    scans = {name: LogScan() for name in [*dict.fromkeys(name for name, _, _ in windows), "outside", "all"]}
    for record in read_records(log):
        scans["all"].add(record)
        # Lines reach the file through a batching writer; the record's own timestamp says when it happened.
        inside = next((name for name, start, end in windows if record.when is not None and start <= record.when < end), None)
        scans[inside or "outside"].add(record)
    return scans
