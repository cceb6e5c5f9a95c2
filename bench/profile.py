"""Where the gateway's time goes: py-spy samples it while wrk drives it.

    python -m bench.profile [--scenario company|lean] [--upstream nginx|mock] [--stream] [--seconds 15]

The gateway runs one of the benchmark's scenarios (bench/scenarios.py); py-spy (PyPI,
installed on first use) records its stacks in collapsed form, and the
summary prints the functions with the most samples, inclusive and self,
so a change to the hot path can be judged before and after.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import threading
import uuid
from collections import Counter
from pathlib import Path

from bench.gateway import PROJECT_ROOT, Process, delete_prefix, start_gateway
from bench.load import run_streams, run_wrk
from bench.run import RESULTS, json_body, stream_body
from bench.scenarios import SCENARIOS, scenario
from bench.upstream import Nginx, ensure_tools, free_port


def py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(found).exists():
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "py-spy"], check=True)
    return found


def summarise(collapsed: Path, top: int = 25) -> str:
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        count = int(count_text)
        total += count
        frames = stack.split(";")
        for frame in set(frames):
            inclusive[frame] += count
        own[frames[-1]] += count
    if not total:
        return "no samples"

    def table(counter: Counter[str]) -> list[str]:
        return [f"  {100 * n / total:5.1f}%  {frame}" for frame, n in counter.most_common(top)]

    return "\n".join([f"{total} samples", "inclusive:", *table(inclusive), "self:", *table(own)])


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile")
    parser.add_argument("--scenario", choices=SCENARIOS, default="company")
    parser.add_argument("--upstream", choices=("nginx", "mock"), default="nginx")
    parser.add_argument("--stream", action="store_true", help="profile the stream relay instead of whole answers")
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    ensure_tools()
    spy = py_spy()
    prefix = f"llmrbench:{uuid.uuid4().hex[:12]}:"
    with tempfile.TemporaryDirectory(prefix="llmr-profile-") as tmp:
        work = Path(tmp)
        nginx = Nginx(work).start()
        gateway: Process | None = None
        try:
            port = free_port()
            chosen = scenario(args.scenario, port, nginx.url, work, args.redis_url, prefix)
            if args.upstream == "mock":
                mock = {"kind": "mock", "options": {"completion_tokens": 100}}
                chosen.config["providers"] = {name: mock for name in chosen.config["providers"]}
            gateway = start_gateway(chosen, port, work)
            url = gateway.url
            collapsed = RESULTS / f"profile-{args.scenario}-{args.upstream}{'-stream' if args.stream else ''}.txt"
            recorder = subprocess.Popen(
                [spy, "record", "--pid", str(gateway.pid), "--duration", str(args.seconds), "--format", "raw", "--output", str(collapsed), "--rate", "250"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            auth = chosen.authorization
            if args.stream:
                load = threading.Thread(
                    target=run_streams,
                    args=({"gateway": (url + "/v1/chat/completions", stream_body("bench-stream"), auth)},),
                    kwargs={"latency_streams": 0, "load_streams": 10**6, "budget_s": args.seconds + 1},
                )
            else:
                load = threading.Thread(
                    target=run_wrk,
                    args=(url + "/v1/chat/completions", json_body("bench")),
                    kwargs={"connections": 64, "seconds": args.seconds + 1, "authorization": auth},
                )
            load.start()
            load.join()
            _, err = recorder.communicate(timeout=60)
            if recorder.returncode != 0:
                print(err.decode(), file=sys.stderr)
                return 1
            print(summarise(collapsed))
            print(f"\ncollapsed stacks: {collapsed.relative_to(PROJECT_ROOT)} (open in speedscope.app or flamegraph.pl)")
        finally:
            if gateway is not None:
                gateway.stop()
            nginx.stop()
            delete_prefix(args.redis_url, prefix)
    return 0


if __name__ == "__main__":
    sys.exit(main())
