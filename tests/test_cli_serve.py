"""`llm-router serve` on a port already taken: one line on stderr, exit 1, no traceback."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

CONFIG = "auth: {enabled: false}\nproviders: {m: {kind: mock}}\nmodels: {chat: {targets: [{provider: m, model: x}]}}\n"


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_on_a_port_in_use_says_so_in_one_line_and_exits_1(tmp_path, workers):
    (tmp_path / "routes.yaml").write_text(CONFIG)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "router", "serve", "--config", "routes.yaml", "--port", str(port), "--workers", str(workers)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"llm-router: port {port} is in use (127.0.0.1:{port}): stop what holds it, or pick another with --port or ROUTER_PORT"
    ]
    assert "serving on" not in result.stdout


def test_serve_on_an_address_not_on_this_machine_is_one_line_too(tmp_path):
    # 192.0.2.0/24 is TEST-NET-1: never assigned to a host, so bind() fails with EADDRNOTAVAIL.
    (tmp_path / "routes.yaml").write_text(CONFIG.replace("auth: {enabled: false}", "auth: {enabled: false, allow_remote_without_auth: true}"))
    result = subprocess.run(
        [sys.executable, "-m", "router", "serve", "--config", "routes.yaml", "--host", "192.0.2.1", "--port", "8080"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("llm-router: cannot listen on 192.0.2.1:8080: "), result.stderr
