"""A throwaway PostgreSQL cluster: ``initdb`` into a temp dir, ``pg_ctl start`` on a free port, ``pg_ctl stop``.

Used by ``./dev test`` for the session's server (its DSN is exported to the
tests as ROUTER_TEST_POSTGRES_DSN) and by the tests that stop and restart a
server of their own::

    python -m tests.pg_cluster start        prints the cluster's directory and its DSN, one line
    python -m tests.pg_cluster stop DIR     stops it and removes the directory

The binaries are found on PATH or in /usr/lib/postgresql/<version>/bin
(Debian's ``postgresql`` package; ``./dev`` installs it when missing).
PostgreSQL refuses to run as root, so as root every command runs as the
``postgres`` system user the package creates (``runuser``), and the
directory is given to it.  Host connections need a password (scram), so the
DSN carries one, as a real deployment's does.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

RUN_AS = "postgres"


def bin_dir() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    versions = [p.parent for p in Path("/usr/lib/postgresql").glob("*/bin/pg_ctl")]
    versions.sort(key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    return versions[-1] if versions else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cluster:
    def __init__(self, root: Path, port: int, password: str, user: str = "router") -> None:
        self.root = root
        self.data = root / "data"
        self.port = port
        self.password = password
        self.user = user

    @property
    def dsn(self) -> str:
        return f"postgresql://{self.user}:{self.password}@127.0.0.1:{self.port}/postgres"

    @classmethod
    def create(cls, port: int | None = None) -> Cluster:
        """A new, initialised (not yet started) cluster in a temp dir of its own."""
        binaries = bin_dir()
        if binaries is None:
            raise RuntimeError("pg_ctl and initdb are not installed (Debian: apt-get install postgresql)")
        # Not under pytest's tmp_path: its parents are root's, closed to the postgres user.
        root = Path(tempfile.mkdtemp(prefix="llmr-pg-"))
        cluster = cls(root, port or free_port(), secrets.token_hex(12))
        if os.geteuid() == 0:
            entry = pwd.getpwnam(RUN_AS)
            os.chown(root, entry.pw_uid, entry.pw_gid)
        pwfile = root / "pwfile"
        pwfile.write_text(cluster.password + "\n")
        if os.geteuid() == 0:
            os.chown(pwfile, pwd.getpwnam(RUN_AS).pw_uid, -1)
        pwfile.chmod(0o600)
        cluster._run(
            "initdb", "-D", str(cluster.data), "-U", cluster.user, f"--pwfile={pwfile}", "--auth-local=trust", "--auth-host=scram-sha-256",
            "-E", "UTF8", "--locale=C", "--no-sync",
        )  # fmt: skip
        pwfile.unlink()
        return cluster

    def _run(self, tool: str, *args: str) -> None:
        binaries = bin_dir()
        assert binaries is not None
        cmd = [str(binaries / tool), *args]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", RUN_AS, "--", *cmd]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False, cwd=self.root)
        if done.returncode != 0:
            log = (self.root / "server.log").read_text(errors="replace")[-2000:] if (self.root / "server.log").exists() else ""
            raise RuntimeError(f"{tool} failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}\n{log}")

    def start(self) -> None:
        # Throwaway data: no fsync.  A clean stop (-m fast) still checkpoints, so a restart keeps every row.
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off -c shared_buffers=32MB"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"), "-w", "-t", "60", "-o", options, "start")

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self.signal_all(signal.SIGCONT)  # a frozen server cannot stop
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop")

    def pids(self) -> list[int]:
        """The postmaster and every process it started (backends, checkpointer, ...)."""
        postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
        children = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # gone meanwhile
            if int(fields[1]) == postmaster:
                children.append(int(stat.parent.name))
        return [postmaster, *children]

    def signal_all(self, sig: int) -> None:
        """SIGSTOP freezes the server whole (every call to it hangs until its timeout); SIGCONT thaws it."""
        for pid in self.pids():
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def remove(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def main(argv: list[str]) -> int:
    if argv[:1] == ["start"]:
        cluster = Cluster.create()
        try:
            cluster.start()
        except RuntimeError:
            cluster.remove()
            raise
        print(cluster.root, cluster.dsn)
        return 0
    if len(argv) == 2 and argv[0] == "stop":
        root = Path(argv[1])
        if root.name.startswith("llmr-pg-"):  # only a directory this module made
            Cluster(root, 0, "").remove()
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
