"""Every curl in README.md parses, and those in blocks marked `<!-- runnable -->` answer 2xx on the quick start.

The quick-start gateway is `llm-router serve` on the shipped routes.yaml
(copied, so its ledger file lands in the test's folder) with
ROUTER_ADMIN_TOKEN set, as the README says to start it.  Each command runs
as written, through bash and the real curl, with the README's
``localhost:8080`` pointed at the test's port.  A block with a curl that
needs keys made first is marked `<!-- needs-keys -->`: parsed, not run.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys

import pytest

from tests.conftest import PROJECT_ROOT, _ready, free_port, wait_for
from tests.readme_blocks import Block, blocks

SHELLS = ("sh", "bash", "console")
CURL_MARKERS = ("runnable", "needs-keys")
ADMIN_TOKEN = "readme-admin-token-0123456789abcdef"


def commands(block: Block) -> list[str]:
    """The curl command lines of a block, continuation lines joined."""
    joined = re.sub(r"\\\n\s*", " ", block.text)
    return [line.strip() for line in joined.splitlines() if line.strip().startswith("curl ")]


CURL_BLOCKS = [b for b in blocks() if b.lang in SHELLS and commands(b)]
RUNNABLE = [(b, c) for b in CURL_BLOCKS if b.marker == "runnable" for c in commands(b)]


def test_every_block_with_a_curl_says_whether_it_runs_on_the_quick_start():
    assert CURL_BLOCKS
    unmarked = [b.name for b in CURL_BLOCKS if b.marker not in CURL_MARKERS]
    assert unmarked == [], f"mark these <!-- runnable --> or <!-- needs-keys -->: {unmarked}"
    assert len(RUNNABLE) >= 5


@pytest.mark.parametrize("command", [c for b in CURL_BLOCKS for c in commands(b)])
def test_every_readme_curl_parses_and_names_the_gateway(command):
    words = shlex.split(command, comments=True)
    assert words[0] == "curl"
    urls = [w for w in words[1:] if re.match(r"^(https?://)?(localhost|127\.0\.0\.1):8080/", w)]
    assert len(urls) == 1, f"one URL on the quick-start gateway (localhost:8080 or 127.0.0.1:8080): {command}"
    bodies = [words[i + 1] for i, w in enumerate(words[:-1]) if w in ("-d", "--data")]
    for body in bodies:
        assert isinstance(json.loads(body), dict), body


@pytest.fixture(scope="module")
def quick_start(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("quick-start")
    shutil.copy(PROJECT_ROOT / "routes.yaml", folder / "routes.yaml")
    port = free_port()
    env = {**os.environ, "ROUTER_ADMIN_TOKEN": ADMIN_TOKEN}
    proc = subprocess.Popen(
        [sys.executable, "-m", "router", "serve", "--config", "routes.yaml", "--port", str(port)],
        cwd=folder,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        asyncio.run(wait_for(lambda: _ready(f"http://127.0.0.1:{port}"), timeout=20, interval=0.05))
        yield port, folder
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=15)


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
@pytest.mark.parametrize(("block", "command"), RUNNABLE, ids=[f"{b.name}:{i}" for i, (b, _) in enumerate(RUNNABLE)])
def test_a_runnable_readme_curl_answers_2xx_on_the_quick_start(quick_start, block, command):
    port, folder = quick_start
    command = re.sub(r"(localhost|127\.0\.0\.1):8080", f"127.0.0.1:{port}", command)
    # curl as the README calls it, plus the status on stderr, where no redirection of the README's goes.
    script = "curl() { command curl -sS --write-out '%{stderr}HTTP %{http_code}\\n' \"$@\"; }\n" + command + "\n"
    result = subprocess.run(
        ["bash", "-c", script], cwd=folder, env={**os.environ, "ROUTER_ADMIN_TOKEN": ADMIN_TOKEN}, capture_output=True, text=True, timeout=30
    )
    status = re.findall(r"HTTP (\d{3})", result.stderr)
    assert result.returncode == 0 and len(status) == 1 and status[0].startswith("2"), f"{block.name}: {command}\n{result.stdout}\n{result.stderr}"
