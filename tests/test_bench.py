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
    assert "gateway/floor" in done.stdout and "nginx alone" in done.stdout
    report = json.loads((tmp_path / "latest.json").read_text())
    for target in ("upstream", "floor", "gateway"):
        assert set(report["results"][target]) == {"latency", "throughput", "stream"}
        assert report["results"][target]["throughput"]["requests"] > 0
        assert report["results"][target]["stream"]["chunks_per_stream"] == 101  # 100 content chunks and the usage chunk
        assert report["errors"][target] == {"non_2xx": 0, "socket_errors": 0}, report["errors"]
    assert len(report["checks"]) == 7
    assert report["long_run"]["requests"] >= 500
    assert report["rss_mb"]["after_warmup"] > 0
