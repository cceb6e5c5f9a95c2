"""``python -m bench --quick`` runs end to end and writes its table and JSON.

Nothing here asserts speed: a shared CI box makes numbers meaningless in a
test.  It asserts the run completes, every scenario has a figure for every
target, every issue-6 target was evaluated, and nothing answered non-2xx.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT


@pytest.mark.timeout(120)
def test_quick_bench_prints_the_table_and_writes_json(redis_url: str, tmp_path: Path) -> None:
    missing = [tool for tool in ("nginx", "wrk") if shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin:/bin") is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed; `./dev bench` installs nginx-light and wrk from Debian's packages")
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--long-run", "500", "--results", str(tmp_path), "--redis-url", redis_url],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "company/floor" in done.stdout and "lean/floor" in done.stdout and "nginx alone" in done.stdout
    report = json.loads((tmp_path / "latest.json").read_text())
    for target in ("upstream", "floor", "lean", "company"):
        results = report["results"][target]
        assert set(results) == {"c1", "c64", "c256", "stream"}
        for load in ("c1", "c64", "c256"):
            assert results[load]["requests"] > 0
            assert (results[load]["non_2xx"], results[load]["socket_errors"]) == (0, 0), (target, load, results[load])
        assert results["stream"]["chunks_per_stream"] == 101  # 100 content chunks and the usage chunk
        assert (results["stream"]["non_2xx"], results["stream"]["socket_errors"]) == (0, 0)
    checks = {c["figure"]: c for c in report["checks"]}
    assert checks["non-2xx + socket errors, every target and load"]["holds"]
    assert checks["log records with ERROR or a traceback, both gateways"]["holds"]
    assert "company: 2xx req/s at 64 connections, gateway/floor" in checks
    assert report["long_run"]["requests"] >= 500
    assert report["rss_mb"]["company"]["after_warmup"] > 0


def test_the_soak_runs_the_company_scenario_and_says_it_passed(redis_url: str) -> None:
    missing = [tool for tool in ("nginx", "wrk") if shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin:/bin") is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed; `./dev bench` installs nginx-light and wrk from Debian's packages")
    done = subprocess.run(
        [sys.executable, "-m", "bench.soak", "--seconds", "1", "--scenario", "company", "--concurrency", "16,64", "--redis-url", redis_url],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "soak: PASSED" in done.stdout
