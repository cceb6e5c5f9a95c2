"""nginx as the fixed-cost upstream, and the tools the benchmark needs.

nginx answers from memory with ``return 200``: a canned OpenAI
``chat.completion`` on ``/v1/chat/completions`` and a canned SSE stream of
100 content chunks, a final usage chunk and ``[DONE]`` on
``/stream/v1/chat/completions``.  Its config is generated into a temp dir
and it runs in the foreground (``daemon off``) as our child on a free
loopback port, so nothing on the machine is touched.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import orjson

STREAM_CHUNKS = 100
PROMPT_TOKENS = 24


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            if time.monotonic() >= deadline:
                raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout}s") from None
            time.sleep(0.02)


def ensure_tools() -> None:
    """Install nginx-light and wrk from Debian's packages when either is missing."""
    missing = [
        pkg for pkg, binary in (("nginx-light", "nginx"), ("wrk", "wrk")) if shutil.which(binary, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin") is None
    ]
    if not missing:
        return
    if shutil.which("apt-get") is None:
        raise SystemExit(f"bench: {', '.join(missing)} missing and apt-get is not available; install them by hand")
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    print(f"bench: installing {', '.join(missing)} from Debian's packages", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run([*sudo, "apt-get", "update", "-qq"], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run([*sudo, "apt-get", "install", "-y", "-qq", *missing], check=True, env=env, stdout=subprocess.DEVNULL)


def nginx_binary() -> str:
    found = shutil.which("nginx", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    if found is None:
        raise SystemExit("bench: nginx not found (ensure_tools installs nginx-light)")
    return found


def completion_body() -> bytes:
    return orjson.dumps(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": 1700000000,
            "model": "bench-model",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "The quick brown fox jumps over the lazy dog."}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": 10, "total_tokens": PROMPT_TOKENS + 10},
        }
    )


def stream_body(chunks: int = STREAM_CHUNKS) -> bytes:
    head = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1700000000, "model": "bench-model"}
    events = []
    for i in range(chunks):
        delta = {"role": "assistant", "content": ""} if i == 0 else {"content": f"tok{i} "}
        finish = "stop" if i == chunks - 1 else None
        events.append(orjson.dumps({**head, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}))
    events.append(
        orjson.dumps({**head, "choices": [], "usage": {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": chunks, "total_tokens": PROMPT_TOKENS + chunks}})
    )
    events.append(b"[DONE]")
    return b"".join(b"data: " + e + b"\n\n" for e in events)


def nginx_config(root: Path, port: int) -> str:
    # The answers are files, not ``return`` strings (nginx caps a config token at
    # 4 KB).  nginx serves files only to GET, so a POST's 405 is turned into an
    # internal GET of the same file: the usual way to make nginx a canned POST API.
    return f"""
worker_processes 1;
daemon off;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {root}/body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
    keepalive_requests 10000000;
    keepalive_timeout 120s;
    client_body_buffer_size 64k;
    open_file_cache max=16;
    open_file_cache_valid 3600s;
    etag off;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        root {root}/www;
        error_page 405 =200 $uri;
        location = /v1/chat/completions {{ default_type application/json; }}
        location = /stream/v1/chat/completions {{ default_type text/event-stream; }}
    }}
}}
"""


class Nginx:
    def __init__(self, workdir: Path) -> None:
        self.root = workdir / "nginx"
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Nginx:
        self.root.mkdir(parents=True, exist_ok=True)
        # nginx's workers drop to "nobody" when started as root: they must be able to read the answers.
        for directory in (self.root.parent, self.root):
            directory.chmod(0o755)
        for path, body in (("v1/chat/completions", completion_body()), ("stream/v1/chat/completions", stream_body())):
            file = self.root / "www" / path
            file.parent.mkdir(parents=True, exist_ok=True)
            file.write_bytes(body)
        conf = self.root / "nginx.conf"
        conf.write_text(nginx_config(self.root, self.port))
        binary = nginx_binary()
        check = subprocess.run([binary, "-t", "-q", "-p", str(self.root), "-e", str(self.root / "error.log"), "-c", str(conf)], capture_output=True, text=True)
        if check.returncode != 0:
            raise SystemExit(f"bench: the generated nginx config is rejected:\n{check.stderr}")
        self.proc = subprocess.Popen(
            [binary, "-p", str(self.root), "-e", str(self.root / "error.log"), "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_port(self.port)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: nginx's fast shutdown, workers included
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
