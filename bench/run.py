"""One benchmark run: nginx, the floor and both gateway scenarios, each driven in turn, then one table.

Targets: nginx alone, the floor (bench/floor.py), the ``lean`` gateway and the
``company`` gateway (bench/scenarios.py), all up at once.  Each load runs in
alternating rounds over the targets (so drift on a shared machine hits all
alike; rates are summed over the rounds, percentiles are the median round's):

    c=1          wrk, 1 connection: p50 and p99; "added" is over nginx alone
    c=64, c=256  wrk: answers below 400 per second ("2xx req/s") and p99
    stream       100-chunk SSE: time to first chunk (one stream at a time) and
                 chunks/s (16 streams in flight)
    long run     the company gateway only, 64 connections until ``--long-run``
                 requests: resident memory after warm-up and after the long run

Every load counts non-2xx answers and socket errors per target and
concurrency; the company gateway's ``/metrics`` is scraped once per round and
its log is read afterwards for ERROR lines and tracebacks, by load window.
Issue 6's and issue 10's targets are checked as ratios gateway/floor from
this one run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from bench.gateway import PROJECT_ROOT, LogScan, Process, delete_prefix, get, post, rss_mb, scan_log, scrape, start_gateway
from bench.load import WrkResult, combine_rounds, run_streams, run_wrk
from bench.scenarios import Scenario, company, lean
from bench.upstream import Nginx, ensure_tools, free_port, wait_port

RESULTS = Path(__file__).with_name("results")
TARGETS = ("upstream", "floor", "lean", "company")
GATEWAYS = ("lean", "company")
CONCURRENCY = (1, 64, 256)
COLUMNS = {"upstream": "nginx alone", "floor": "floor", "lean": "lean", "company": "company"}


@dataclass(frozen=True)
class Plan:
    round_s: float  # seconds of one wrk round per target and concurrency
    warmup_s: float
    latency_streams: int
    load_streams: int
    stream_budget_s: float
    long_run: int
    workers: int
    rounds: int  # each load runs in this many alternating rounds per target


def plan_from(args: argparse.Namespace) -> Plan:
    long_run = args.long_run if args.long_run is not None else (2_000 if args.quick else 200_000)
    if args.quick:
        return Plan(1, 1, 20, 60, 3, long_run, args.workers, 1)
    return Plan(max(1.0, round(args.duration / args.rounds)), 3, 200, 1200, 60, long_run, args.workers, args.rounds)


@dataclass(frozen=True)
class Target:
    json_url: str
    json_body: bytes
    stream_url: str
    stream_body: bytes
    authorization: str = ""


# --------------------------------------------------------------------------
# Bodies

CHAT = {"messages": [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Say something about foxes and dogs."}], "max_tokens": 32}


def json_body(model: str) -> bytes:
    return orjson.dumps({"model": model, **CHAT})


def stream_body(model: str) -> bytes:
    return orjson.dumps({"model": model, **CHAT, "stream": True, "stream_options": {"include_usage": True}})


def gateway_target(gateway: Process, scenario: Scenario) -> Target:
    url = gateway.url + "/v1/chat/completions"
    return Target(url, json_body("bench"), url, stream_body("bench-stream"), scenario.authorization)


def check_answers(name: str, target: Target) -> None:
    """One request, checked by hand: a broken setup should stop here, not fill a table."""
    headers = {"Authorization": target.authorization} if target.authorization else {}
    status, answer = post(target.json_url, target.json_body, headers)
    if status != 200:
        raise SystemExit(f"bench: {name} answered {status}: {answer[:500]!r}")


# --------------------------------------------------------------------------
# Report


def _ratio(a: float, b: float) -> float:
    return round(a / b, 3) if b and not math.isnan(a) and not math.isnan(b) else float("nan")


def _fmt(value: float, digits: int = 2) -> str:
    return "n/a" if isinstance(value, float) and math.isnan(value) else f"{value:,.{digits}f}"


def added_p50(results: dict[str, dict[str, Any]], target: str) -> float:
    return float(results[target]["c1"].p50_ms - results["upstream"]["c1"].p50_ms)


def added_ttfc(results: dict[str, dict[str, Any]], target: str) -> float:
    return float(results[target]["stream"].ttfc_p50_ms - results["upstream"]["stream"].ttfc_p50_ms)


def ratios(results: dict[str, dict[str, Any]], gateway: str) -> dict[str, float]:
    """Every gateway/floor figure the table and the targets use, for one scenario."""
    gw, fl = results[gateway], results["floor"]
    return {
        "added_p50_c1": _ratio(added_p50(results, gateway), added_p50(results, "floor")),
        "ok_rps_c64": _ratio(gw["c64"].ok_rps, fl["c64"].ok_rps),
        "p99_c64": _ratio(gw["c64"].p99_ms, fl["c64"].p99_ms),
        "ok_rps_c256": _ratio(gw["c256"].ok_rps, fl["c256"].ok_rps),
        "p99_c256": _ratio(gw["c256"].p99_ms, fl["c256"].p99_ms),
        "added_ttfc": _ratio(added_ttfc(results, gateway), added_ttfc(results, "floor")),
        "chunks_per_s": _ratio(gw["stream"].chunks_per_s, fl["stream"].chunks_per_s),
    }


def all_errors(results: dict[str, dict[str, Any]], extra: dict[str, dict[str, int]]) -> int:
    counted = sum(r.non_2xx + r.socket_errors for t in TARGETS for r in results[t].values())
    return counted + sum(v for e in extra.values() for v in e.values())


def evaluate(
    results: dict[str, dict[str, Any]], rss: dict[str, dict[str, float]], extra_errors: dict[str, dict[str, int]], logs: dict[str, LogScan]
) -> list[dict[str, Any]]:
    lean_r, comp_r = ratios(results, "lean"), ratios(results, "company")
    comp_rss = rss["company"]
    growth = (comp_rss["after_long_run"] - comp_rss["after_warmup"]) / comp_rss["after_warmup"] if comp_rss["after_warmup"] else float("nan")
    checks: list[tuple[str, float, str, float, str]] = [
        ("company: 2xx req/s at 64 connections, gateway/floor", comp_r["ok_rps_c64"], ">=", 0.6, "10"),
        ("company: added p50 at 1 connection, gateway/floor", comp_r["added_p50_c1"], "<=", 2.0, "10"),
        ("lean: 2xx req/s at 64 connections, gateway/floor", lean_r["ok_rps_c64"], ">=", 0.8, "10"),
        ("lean: added p50 at 1 connection, gateway/floor", lean_r["added_p50_c1"], "<=", 2.0, "6"),
        ("lean: p99 at 64 connections, gateway/floor", lean_r["p99_c64"], "<=", 2.0, "6"),
        ("company: p99 at 64 connections, gateway/floor", comp_r["p99_c64"], "<=", 2.0, "6"),
        ("lean: stream added first chunk, gateway/floor", lean_r["added_ttfc"], "<=", 2.0, "6"),
        ("company: stream added first chunk, gateway/floor", comp_r["added_ttfc"], "<=", 2.0, "6"),
        ("lean: stream chunks/s, gateway/floor", lean_r["chunks_per_s"], ">=", 0.5, "6"),
        ("company: stream chunks/s, gateway/floor", comp_r["chunks_per_s"], ">=", 0.5, "6"),
        ("company: RSS after the long run (MB)", comp_rss["after_long_run"], "<", 150.0, "6"),
        ("company: RSS growth warm-up -> long run", round(growth, 4), "<", 0.10, "6"),
        ("non-2xx + socket errors, every target and load", float(all_errors(results, extra_errors)), "<=", 0.0, "10"),
        ("log records with ERROR or a traceback, both gateways", float(sum(s.problems for s in logs.values())), "<=", 0.0, "10"),
    ]
    out = []
    for name, value, op, target, issue in checks:
        ok = (value >= target) if op == ">=" else (value <= target) if op == "<=" else (value < target)
        out.append({"figure": name, "value": value, "target": f"{op} {target:g}", "issue": issue, "holds": bool(ok) and not math.isnan(value)})
    return out


def render(
    results: dict[str, dict[str, Any]],
    rss: dict[str, dict[str, float]],
    checks: list[dict[str, Any]],
    long_run: dict[str, Any],
    extra_errors: dict[str, dict[str, int]],
    logs: dict[str, dict[str, LogScan]],
    metrics: dict[str, Any],
    plan: Plan,
) -> str:
    rows: list[tuple[str, ...]] = []
    ratio_of = {g: ratios(results, g) for g in GATEWAYS}

    def row(label: str, pick: Any, digits: int = 2, ratio: str | None = None) -> None:
        cells = [_fmt(pick(t), digits) for t in TARGETS]
        cells += [_fmt(ratio_of[g][ratio], 2) if ratio else "" for g in GATEWAYS]
        rows.append((label, *cells))

    def errors_row(label: str, scenario: str) -> None:
        rows.append((label, *(f"{results[t][scenario].non_2xx} / {results[t][scenario].socket_errors}" for t in TARGETS), "", ""))

    row("1 conn: p50 ms", lambda t: results[t]["c1"].p50_ms, 3)
    row("1 conn: p99 ms", lambda t: results[t]["c1"].p99_ms, 3)
    row("1 conn: added p50 ms", lambda t: added_p50(results, t), 3, "added_p50_c1")
    errors_row("1 conn: non-2xx / socket errors", "c1")
    for c in (64, 256):
        row(f"{c} conn: 2xx req/s", lambda t, c=c: results[t][f"c{c}"].ok_rps, 0, f"ok_rps_c{c}")
        row(f"{c} conn: p99 ms", lambda t, c=c: results[t][f"c{c}"].p99_ms, 2, f"p99_c{c}")
        errors_row(f"{c} conn: non-2xx / socket errors", f"c{c}")
    row("stream: first chunk p50 ms", lambda t: results[t]["stream"].ttfc_p50_ms, 3)
    row("stream: added first chunk ms", lambda t: added_ttfc(results, t), 3, "added_ttfc")
    row("stream: chunks/s (16 streams)", lambda t: results[t]["stream"].chunks_per_s, 0, "chunks_per_s")
    row("stream: chunks per stream", lambda t: results[t]["stream"].chunks_per_stream, 0)
    errors_row("stream: non-2xx / socket errors", "stream")
    width = max(len(r[0]) for r in rows)
    heads = [COLUMNS[t] for t in TARGETS] + ["lean/floor", "company/floor"]
    lines = [f"{'':<{width}}" + "".join(f"  {h:>13}" for h in heads)]
    lines += [f"{r[0]:<{width}}" + "".join(f"  {cell:>13}" for cell in r[1:]) for r in rows]
    lines.append("")
    lines.append(
        f"company RSS: {rss['company']['after_warmup']} MB after warm-up, {rss['company']['after_long_run']} MB after {long_run['requests']:,} more requests "
        f"({long_run['rps']:,.0f} req/s, {long_run['non_2xx']} non-2xx, {long_run['socket_errors']} socket errors); "
        f"lean RSS: {rss['lean']['after_warmup']} MB after warm-up, {rss['lean']['after_measuring']} MB after measuring"
    )
    lines.append(
        "warm-up (64 conn): "
        + ", ".join(f"{t} {e['non_2xx']} non-2xx / {e['socket_errors']} socket errors" for t, e in extra_errors.items() if t != "long run")
    )
    for gateway in GATEWAYS:
        scans = logs[gateway]
        parts = [f"{name} {s.errors} ERROR / {s.tracebacks} tracebacks" for name, s in scans.items() if name != "all"]
        lines.append(f"{gateway} log ({scans['all'].info:,} info, {scans['all'].warnings:,} warning lines): " + "; ".join(parts))
        lines += [f"    {count:>6} x {message}" for count, message in scans["all"].top(3)]
    lines.append(f"company /metrics: {metrics['ok']} of {metrics['scrapes']} scrapes answered 200; last watched samples {metrics['last'] or 'none'}")
    lines.append(f"workers per gateway: {plan.workers}; rounds: {plan.rounds} x {plan.round_s:g}s per target and concurrency")
    lines.append("")
    fw = max(len(c["figure"]) for c in checks)
    lines.append(f"{'target':<{fw}}  {'issue':>5}  {'value':>9}  {'target':>8}")
    for c in checks:
        lines.append(f"{c['figure']:<{fw}}  {c['issue']:>5}  {_fmt(c['value'], 3):>9}  {c['target']:>8}  {'holds' if c['holds'] else 'MISSED'}")
    return "\n".join(lines)


# --------------------------------------------------------------------------
# The run


def run(args: argparse.Namespace) -> dict[str, Any]:
    plan = plan_from(args)
    ensure_tools()
    redis_url = args.redis_url
    prefix = args.redis_prefix or f"llmrbench:{uuid.uuid4().hex[:12]}:"
    procs: list[Process] = []
    nginx: Nginx | None = None
    windows: list[tuple[str, float, float]] = []
    with tempfile.TemporaryDirectory(prefix="llmr-bench-") as tmp:
        work = Path(tmp)
        try:
            nginx = Nginx(work).start()
            floor_port = free_port()
            floor = Process.spawn(
                [sys.executable, "-m", "bench.floor", "--port", str(floor_port), "--upstream", nginx.url], work / "floor.log", f"http://127.0.0.1:{floor_port}"
            )
            procs.append(floor)
            scenarios = {"lean": lean(free_port(), nginx.url), "company": company(free_port(), nginx.url, work, redis_url, prefix)}
            gateways: dict[str, Process] = {}
            for name, scenario in scenarios.items():
                gateways[name] = start_gateway(scenario, scenario.config["server"]["port"], work, workers=plan.workers)
                procs.append(gateways[name])
            wait_port(floor_port)

            targets = {
                "upstream": Target(
                    nginx.url + "/v1/chat/completions", json_body("bench-model"), nginx.url + "/stream/v1/chat/completions", stream_body("bench-model")
                ),
                "floor": Target(
                    floor.url + "/v1/chat/completions", json_body("bench-model"), floor.url + "/stream/v1/chat/completions", stream_body("bench-model")
                ),
                **{name: gateway_target(gateways[name], scenarios[name]) for name in GATEWAYS},
            }
            for name, target in targets.items():
                check_answers(name, target)
            comp = gateways["company"]
            observed = {
                "company_auth_enforced": post(targets["company"].json_url, targets["company"].json_body)[0] == 401,
                "company_metrics_served": get(comp.url + "/metrics")[0] == 200,
            }
            print(
                f"bench: nginx {nginx.url}, floor {floor.url}, lean {gateways['lean'].url}, company {comp.url} (workers {plan.workers}); "
                f"observed {observed}\n  lean:    {scenarios['lean'].summary}\n  company: {scenarios['company'].summary}",
                flush=True,
            )

            metrics: dict[str, Any] = {"scrapes": 0, "ok": 0, "last": {}}

            def scrape_company() -> None:
                status, watched = scrape(comp.url)
                metrics["scrapes"] += 1
                metrics["ok"] += status == 200
                metrics["last"] = watched

            def drive(name: str, connections: int, seconds: float, window: str) -> WrkResult:
                target = targets[name]
                started = time.time()
                result = run_wrk(target.json_url, target.json_body, connections=connections, seconds=seconds, authorization=target.authorization)
                if name == "company":
                    windows.append((window, started, time.time()))
                return result

            extra_errors: dict[str, dict[str, int]] = {}
            for name in ("floor", *GATEWAYS):
                warm = drive(name, 64, plan.warmup_s, "warm-up")
                extra_errors[name] = {"non_2xx": warm.non_2xx, "socket_errors": warm.socket_errors}
            rss = {g: {"after_warmup": rss_mb(gateways[g].pid)} for g in GATEWAYS}

            results: dict[str, dict[str, Any]] = {t: {} for t in TARGETS}
            for connections in CONCURRENCY:
                print(f"bench: {connections} connection(s), {plan.rounds} round(s) of {plan.round_s:g}s per target", flush=True)
                rounds: dict[str, list[WrkResult]] = {t: [] for t in TARGETS}
                for _ in range(plan.rounds):
                    for name in TARGETS:
                        rounds[name].append(drive(name, connections, plan.round_s, f"c={connections}"))
                    scrape_company()
                for name in TARGETS:
                    results[name][f"c{connections}"] = combine_rounds(rounds[name])

            print(
                f"bench: stream, {plan.latency_streams} streams one at a time and {plan.load_streams} 16 at a time per target at most, "
                f"{plan.stream_budget_s:.0f}s at most",
                flush=True,
            )
            started = time.time()
            streams = run_streams(
                {t: (targets[t].stream_url, targets[t].stream_body, targets[t].authorization) for t in TARGETS},
                latency_streams=plan.latency_streams,
                load_streams=plan.load_streams,
                rounds=plan.rounds,
                budget_s=plan.stream_budget_s,
            )
            windows.append(("stream", started, time.time()))
            scrape_company()
            for name in TARGETS:
                results[name]["stream"] = streams[name]
            rss["lean"]["after_measuring"] = rss_mb(gateways["lean"].pid)

            # The long run: 64 connections until at least plan.long_run requests, in slices sized from the measured rate.
            done = seconds = 0.0
            long_non2xx = long_sock = 0
            rate = max(results["company"]["c64"].rps, 100.0)
            print(f"bench: long run, at least {plan.long_run:,} requests on the company gateway (about {plan.long_run / rate:.0f}s)", flush=True)
            while done < plan.long_run:
                slice_s = min(max(1.0, (plan.long_run - done) / rate * 1.05), 120.0)
                r = drive("company", 64, slice_s, "long run")
                scrape_company()
                done += r.requests
                seconds += r.seconds
                long_non2xx += r.non_2xx
                long_sock += r.socket_errors
                rate = max(r.rps, 100.0)
            rss["company"]["after_long_run"] = rss_mb(comp.pid)
            long_run = {
                "requests": int(done),
                "seconds": round(seconds, 1),
                "rps": round(done / seconds, 1) if seconds else 0.0,
                "non_2xx": long_non2xx,
                "socket_errors": long_sock,
            }
            extra_errors["long run"] = {"non_2xx": long_non2xx, "socket_errors": long_sock}
        finally:
            for proc in reversed(procs):
                proc.stop()
            if nginx is not None:
                nginx.stop()
            try:
                delete_prefix(redis_url, prefix)
            except Exception as exc:  # cleanup must not hide the run's own error
                print(f"bench: could not delete Redis keys under {prefix}: {exc}", file=sys.stderr)
        # Read after the processes stopped: the shutdown is in the log too, and counts.
        logs = {"lean": scan_log(gateways["lean"].log), "company": scan_log(comp.log, windows)}

    checks = evaluate(results, rss, extra_errors, {g: logs[g]["all"] for g in GATEWAYS})
    table = render(results, rss, checks, long_run, extra_errors, logs, metrics, plan)
    print()
    print(table)
    report = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python -m bench", *sys.argv[1:]]),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(), "load_avg": os.getloadavg()},
        "plan": plan.__dict__,
        "scenarios": {name: {"summary": s.summary, "config": s.config} for name, s in scenarios.items()},
        "observed": observed,
        "results": {t: {k: v.to_json() for k, v in results[t].items()} for t in TARGETS},
        "ratios": {g: ratios(results, g) for g in GATEWAYS},
        "warmup_and_long_run_errors": extra_errors,
        "rss_mb": rss,
        "long_run": long_run,
        "logs": {g: {window: scan.to_json() for window, scan in logs[g].items()} for g in GATEWAYS},
        "metrics": metrics,
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
