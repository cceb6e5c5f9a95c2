"""One benchmark run: nginx, the floor and the gateway, each driven in turn, then one table.

Scenarios, each in alternating rounds over the targets (so drift on a
shared machine hits all targets alike; rates are summed over the rounds,
percentiles are the median round's):

    latency      wrk, 1 connection: p50 and p99; "added" is over nginx alone
    throughput   wrk, 64 connections: requests/s and p99
    stream       100-chunk SSE: time to first chunk (one stream at a time) and
                 chunks/s (16 streams in flight)
    long run     the gateway only, 64 connections until ``--long-run`` requests:
                 resident memory after warm-up and after the long run

Targets from issue 6 are checked as ratios gateway/floor from this one run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import orjson
import yaml

from bench.features import BENCH_KEY, Feature, gateway_config
from bench.load import StreamResult, WrkResult, combine_rounds, run_streams, run_wrk
from bench.upstream import Nginx, ensure_tools, free_port, wait_port

RESULTS = Path(__file__).with_name("results")
R = TypeVar("R", WrkResult, StreamResult)
PROJECT_ROOT = Path(__file__).resolve().parent.parent
TARGETS = ("upstream", "floor", "gateway")


@dataclass(frozen=True)
class Plan:
    latency_s: float
    throughput_s: float
    warmup_s: float
    latency_streams: int
    load_streams: int
    stream_budget_s: float
    long_run: int
    workers: int
    rounds: int  # each scenario runs in this many alternating rounds per target


def plan_from(args: argparse.Namespace) -> Plan:
    if args.quick:
        return Plan(1, 1, 1, 20, 60, 3, args.long_run if args.long_run is not None else 2_000, args.workers, 1)
    return Plan(args.duration, args.duration, 3, 200, 1200, 45, args.long_run if args.long_run is not None else 200_000, args.workers, args.rounds)


# --------------------------------------------------------------------------
# Processes


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _post(url: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json", **(headers or {})}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"bench: {url} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if _get(url + "/readyz")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise SystemExit(f"bench: {url} was not ready within {timeout}s:\n{log.read_text()[-3000:]}")


def _spawn(cmd: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=PROJECT_ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


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


def _delete_prefix(redis_url: str, prefix: str) -> int:
    """Delete the run's keys: the state store wraps its prefix in a hash tag ({prefix}:...), the ledger does not."""
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000)) + list(client.scan_iter(match=f"{{{prefix}}}*", count=1000))
        if keys:
            client.delete(*keys)
        return len(keys)
    finally:
        client.close()


# --------------------------------------------------------------------------
# Bodies

CHAT = {"messages": [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Say something about foxes and dogs."}], "max_tokens": 32}


def json_body(model: str) -> bytes:
    return orjson.dumps({"model": model, **CHAT})


def stream_body(model: str) -> bytes:
    return orjson.dumps({"model": model, **CHAT, "stream": True, "stream_options": {"include_usage": True}})


# --------------------------------------------------------------------------
# Report


def _ratio(a: float, b: float) -> float:
    return round(a / b, 3) if b and not math.isnan(a) and not math.isnan(b) else float("nan")


def evaluate(results: dict[str, dict[str, Any]], rss: dict[str, float]) -> list[dict[str, Any]]:
    up, fl, gw = (results[t] for t in TARGETS)
    lat: dict[str, WrkResult] = {t: results[t]["latency"] for t in TARGETS}
    thr: dict[str, WrkResult] = {t: results[t]["throughput"] for t in TARGETS}
    st: dict[str, StreamResult] = {t: results[t]["stream"] for t in TARGETS}
    del up, fl, gw
    floor_added = lat["floor"].p50_ms - lat["upstream"].p50_ms
    gw_added = lat["gateway"].p50_ms - lat["upstream"].p50_ms
    floor_ttfc = st["floor"].ttfc_p50_ms - st["upstream"].ttfc_p50_ms
    gw_ttfc = st["gateway"].ttfc_p50_ms - st["upstream"].ttfc_p50_ms
    growth = (rss["after_long_run"] - rss["after_warmup"]) / rss["after_warmup"] if rss["after_warmup"] else float("nan")
    checks = [
        ("throughput at 64 connections (gateway/floor req/s)", _ratio(thr["gateway"].rps, thr["floor"].rps), ">=", 0.6),
        ("added latency p50 at 1 connection (gateway/floor)", _ratio(gw_added, floor_added), "<=", 2.0),
        ("p99 at 64 connections (gateway/floor)", _ratio(thr["gateway"].p99_ms, thr["floor"].p99_ms), "<=", 2.0),
        ("stream: added time to first chunk (gateway/floor)", _ratio(gw_ttfc, floor_ttfc), "<=", 2.0),
        ("stream: chunks relayed per second (gateway/floor)", _ratio(st["gateway"].chunks_per_s, st["floor"].chunks_per_s), ">=", 0.5),
        ("gateway RSS after the long run (MB)", rss["after_long_run"], "<", 150.0),
        ("gateway RSS growth warm-up -> long run", round(growth, 4), "<", 0.10),
    ]
    out = []
    for name, value, op, target in checks:
        ok = (value >= target) if op == ">=" else (value <= target) if op == "<=" else (value < target)
        out.append({"figure": name, "value": value, "target": f"{op} {target}", "holds": bool(ok) and not math.isnan(value)})
    return out


def _fmt(value: float, digits: int = 2) -> str:
    return "n/a" if isinstance(value, float) and math.isnan(value) else f"{value:,.{digits}f}"


def render(
    results: dict[str, dict[str, Any]],
    rss: dict[str, float],
    checks: list[dict[str, Any]],
    errors: dict[str, dict[str, int]],
    features: list[Feature],
    long_run: dict[str, Any],
) -> str:
    rows: list[tuple[str, ...]] = []

    def row(label: str, pick: Any, digits: int = 2) -> None:
        rows.append((label, *(_fmt(pick(results[t]), digits) for t in TARGETS)))

    row("1 conn: p50 ms", lambda r: r["latency"].p50_ms, 3)
    row("1 conn: p99 ms", lambda r: r["latency"].p99_ms, 3)
    row("1 conn: added p50 ms", lambda r: r["latency"].p50_ms - results["upstream"]["latency"].p50_ms, 3)
    row("64 conn: req/s", lambda r: r["throughput"].rps, 0)
    row("64 conn: p99 ms", lambda r: r["throughput"].p99_ms, 2)
    row("stream: first chunk p50 ms", lambda r: r["stream"].ttfc_p50_ms, 3)
    row("stream: added first chunk ms", lambda r: r["stream"].ttfc_p50_ms - results["upstream"]["stream"].ttfc_p50_ms, 3)
    row("stream: chunks/s (16 streams)", lambda r: r["stream"].chunks_per_s, 0)
    row("stream: chunks per stream", lambda r: r["stream"].chunks_per_stream, 0)
    rows.append(("non-2xx answers", *(str(errors[t]["non_2xx"]) for t in TARGETS)))
    rows.append(("socket errors", *(str(errors[t]["socket_errors"]) for t in TARGETS)))
    width = max(len(r[0]) for r in rows)
    lines = [f"{'':<{width}}  {'nginx alone':>12}  {'floor':>12}  {'gateway':>12}"]
    lines += [f"{r[0]:<{width}}  {r[1]:>12}  {r[2]:>12}  {r[3]:>12}" for r in rows]
    lines.append("")
    lines.append(
        f"gateway RSS: {rss['after_warmup']} MB after warm-up, {rss['after_long_run']} MB after {long_run['requests']:,} more requests "
        f"({long_run['rps']:,.0f} req/s, {long_run['non_2xx']} non-2xx, {long_run['socket_errors']} socket errors)"
    )
    lines.append(
        "features on: "
        + ", ".join(["2 targets per route", "redis state"] + [f.name for f in features if f.enabled])
        + ("; not in this schema: " + ", ".join(f.name for f in features if not f.enabled) if any(not f.enabled for f in features) else "")
    )
    lines.append("")
    fw = max(len(c["figure"]) for c in checks)
    lines.append(f"{'target (issue 6)':<{fw}}  {'value':>9}  {'target':>8}")
    for c in checks:
        lines.append(f"{c['figure']:<{fw}}  {_fmt(c['value'], 3):>9}  {c['target']:>8}  {'holds' if c['holds'] else 'MISSED'}")
    zero = all(v == 0 for e in errors.values() for v in e.values())
    lines.append(f"{'zero non-2xx and socket errors on every target':<{fw}}  {'':>9}  {'':>8}  {'holds' if zero else 'MISSED'}")
    return "\n".join(lines)


# --------------------------------------------------------------------------
# The run


def run(args: argparse.Namespace) -> dict[str, Any]:
    plan = plan_from(args)
    ensure_tools()
    redis_url = args.redis_url
    prefix = f"llmrbench:{uuid.uuid4().hex[:12]}:"
    procs: list[subprocess.Popen[bytes]] = []
    nginx: Nginx | None = None
    with tempfile.TemporaryDirectory(prefix="llmr-bench-") as tmp:
        work = Path(tmp)
        try:
            nginx = Nginx(work).start()
            floor_port, gw_port = free_port(), free_port()
            floor = _spawn([sys.executable, "-m", "bench.floor", "--port", str(floor_port), "--upstream", nginx.url], work / "floor.log")
            procs.append(floor)
            config, features = gateway_config(gw_port, nginx.url, redis_url, prefix)
            (work / "routes.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
            gw_cmd = [sys.executable, "-m", "router", "serve", "--config", str(work / "routes.yaml"), "--port", str(gw_port)]
            if plan.workers > 1:
                gw_cmd += ["--workers", str(plan.workers)]
            gateway = _spawn(gw_cmd, work / "gateway.log")
            procs.append(gateway)
            wait_port(floor_port)
            _wait_ready(f"http://127.0.0.1:{gw_port}", gateway, work / "gateway.log")

            authorization = f"Bearer {BENCH_KEY}"
            gw_url = f"http://127.0.0.1:{gw_port}"
            urls = {
                "upstream": (
                    nginx.url + "/v1/chat/completions",
                    json_body("bench-model"),
                    nginx.url + "/stream/v1/chat/completions",
                    stream_body("bench-model"),
                ),
                "floor": (
                    f"http://127.0.0.1:{floor_port}/v1/chat/completions",
                    json_body("bench-model"),
                    f"http://127.0.0.1:{floor_port}/stream/v1/chat/completions",
                    stream_body("bench-model"),
                ),
                "gateway": (gw_url + "/v1/chat/completions", json_body("bench"), gw_url + "/v1/chat/completions", stream_body("bench-stream")),
            }
            # A request each, checked by hand: a broken setup should stop here, not fill a table.
            for target, (url, body, _, _) in urls.items():
                status, answer = _post(url, body, {"Authorization": authorization})
                if status != 200:
                    raise SystemExit(f"bench: {target} answered {status}: {answer[:500]!r}")
            observed = {
                "auth_enforced": _post(urls["gateway"][0], urls["gateway"][1])[0] == 401,
                "metrics_served": _get(gw_url + "/metrics", {"Authorization": authorization})[0] == 200,
            }
            for feature in features:
                if feature.probe and not feature.enabled and _get(gw_url + feature.probe, {"Authorization": authorization})[0] == 200:
                    feature.enabled, feature.chosen = True, {"probe": feature.probe}
            print(
                f"bench: nginx {nginx.url}, floor :{floor_port}, gateway :{gw_port} (workers {plan.workers}); "
                f"features {[f.name for f in features if f.enabled] or 'base only'}; observed {observed}",
                flush=True,
            )

            results: dict[str, dict[str, Any]] = {t: {} for t in TARGETS}
            errors = {t: {"non_2xx": 0, "socket_errors": 0} for t in TARGETS}

            def count(target: str, result: R) -> R:
                errors[target]["non_2xx"] += result.non_2xx
                errors[target]["socket_errors"] += result.socket_errors
                return result

            for target in ("floor", "gateway"):
                count(target, run_wrk(urls[target][0], urls[target][1], connections=64, seconds=plan.warmup_s, authorization=authorization))
            rss = {"after_warmup": rss_mb(gateway.pid)}
            round_s = max(1.0, round(plan.latency_s / plan.rounds))
            for scenario, connections in (("latency", 1), ("throughput", 64)):
                print(f"bench: {scenario}, {connections} connection(s), {plan.rounds} round(s) of {round_s:.0f}s per target", flush=True)
                rounds: dict[str, list[WrkResult]] = {t: [] for t in TARGETS}
                for _ in range(plan.rounds):
                    for target in TARGETS:
                        rounds[target].append(
                            count(target, run_wrk(urls[target][0], urls[target][1], connections=connections, seconds=round_s, authorization=authorization))
                        )
                for target in TARGETS:
                    results[target][scenario] = combine_rounds(rounds[target])
            print(
                f"bench: stream, {plan.latency_streams} streams one at a time and {plan.load_streams} 16 at a time per target at most, {plan.stream_budget_s:.0f}s at most",
                flush=True,
            )
            streams = run_streams(
                {t: (urls[t][2], urls[t][3]) for t in TARGETS},
                authorization=authorization,
                latency_streams=plan.latency_streams,
                load_streams=plan.load_streams,
                rounds=plan.rounds,
                budget_s=plan.stream_budget_s,
            )
            for target in TARGETS:
                results[target]["stream"] = count(target, streams[target])

            # The long run: 64 connections until at least plan.long_run requests, in slices sized from the measured rate.
            done = seconds = 0.0
            long_non2xx = long_sock = 0
            rate = max(results["gateway"]["throughput"].rps, 100.0)
            print(f"bench: long run, at least {plan.long_run:,} requests on the gateway (about {plan.long_run / rate:.0f}s)", flush=True)
            while done < plan.long_run:
                slice_s = min(max(1.0, (plan.long_run - done) / rate * 1.05), 120.0)
                r = count("gateway", run_wrk(urls["gateway"][0], urls["gateway"][1], connections=64, seconds=slice_s, authorization=authorization))
                done += r.requests
                seconds += r.seconds
                long_non2xx += r.non_2xx
                long_sock += r.socket_errors
                rate = max(r.rps, 100.0)
            rss["after_long_run"] = rss_mb(gateway.pid)
            long_run = {
                "requests": int(done),
                "seconds": round(seconds, 1),
                "rps": round(done / seconds, 1) if seconds else 0.0,
                "non_2xx": long_non2xx,
                "socket_errors": long_sock,
            }
        finally:
            for proc in reversed(procs):
                _stop(proc)
            if nginx is not None:
                nginx.stop()
            try:
                _delete_prefix(redis_url, prefix)
            except Exception as exc:  # cleanup must not hide the run's own error
                print(f"bench: could not delete Redis keys under {prefix}: {exc}", file=sys.stderr)

    checks = evaluate(results, rss)
    table = render(results, rss, checks, errors, features, long_run)
    print()
    print(table)
    report = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(), "load_avg": os.getloadavg()},
        "plan": plan.__dict__,
        "features": {"base": ["route with 2 openai targets on nginx", "state.backend redis"], **{f.name: (f.chosen if f.enabled else None) for f in features}},
        "observed": observed,
        "results": {t: {k: v.to_json() for k, v in results[t].items()} for t in TARGETS},
        "errors": errors,
        "rss_mb": rss,
        "long_run": long_run,
        "checks": checks,
        "table": table,
    }
    results_dir = Path(args.results) if args.results else RESULTS
    results_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = results_dir / f"{stamp}{'-quick' if args.quick else ''}.json"
    text = json.dumps(report, indent=2, default=lambda v: None if isinstance(v, float) and math.isnan(v) else str(v))
    out.write_text(text)
    (results_dir / "latest.json").write_text(text)
    print(f"\nbench: wrote {out.relative_to(PROJECT_ROOT) if out.is_relative_to(PROJECT_ROOT) else out}")
    return report
