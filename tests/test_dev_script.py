"""`./dev`: with no argument (or help) its usage, exit 0; an unknown command, exit 2."""

from __future__ import annotations

import subprocess

import pytest

from tests.conftest import PROJECT_ROOT

DEV = PROJECT_ROOT / "dev"


def header() -> list[str]:
    """The comment lines between the shebang and `set -euo pipefail`, as the script prints them."""
    lines = DEV.read_text().splitlines()
    end = lines.index("set -euo pipefail")
    return [line.removeprefix("#").removeprefix(" ") for line in lines[1:end] if line.startswith("#")]


@pytest.mark.parametrize("args", [[], ["help"], ["--help"], ["-h"]])
def test_dev_without_a_command_prints_its_usage_and_exits_0(args):
    result = subprocess.run([str(DEV), *args], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0
    assert result.stdout.splitlines() == header()
    assert any(line.lstrip().startswith("./dev serve") for line in header())
    assert "set -euo" not in result.stdout
    assert result.stderr == ""


def test_dev_with_an_unknown_command_says_so_and_exits_2():
    result = subprocess.run([str(DEV), "sever"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert result.stderr.splitlines() == ["dev: unknown command 'sever'", *header()]
    assert result.stdout == ""
