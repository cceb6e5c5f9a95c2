"""Every routes.yaml fragment in README.md passes `llm-router check` as written.

A fragment is merged over the shipped routes.yaml (mappings key by key, a
list or a scalar replaces), so it may show one section alone; whatever it
names beyond that file (a provider, an alias) it must declare itself.  A
```yaml block that is not routes.yaml says so with `<!-- not-routes -->` on
the line before it.  `${VAR}` without a default gets a dummy value, as an
exported key would be.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from typing import Any

import pytest
import yaml

from router.yaml_loader import load_yaml
from tests.conftest import PROJECT_ROOT
from tests.readme_blocks import Block, blocks

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
FRAGMENTS = [b for b in blocks() if b.lang == "yaml" and b.marker != "not-routes"]


def merged(base: Any, over: Any) -> Any:
    if isinstance(base, dict) and isinstance(over, dict):
        return {**base, **{k: merged(base[k], v) if k in base else v for k, v in over.items()}}
    return over


def dummy(name: str) -> str:
    """A value of the shape an exported variable of this name would have."""
    return "postgresql://ledger:secret@localhost:5432/finance" if name.endswith("DSN") else f"dummy-{name.lower()}-0123456789"


def test_the_readme_has_routes_fragments_and_marks_the_others():
    assert len(FRAGMENTS) >= 4
    markers = {b.marker for b in blocks() if b.lang == "yaml"} - {None}
    assert markers <= {"not-routes"}, f"unknown marker(s) before a yaml block: {markers}"


@pytest.mark.parametrize("block", FRAGMENTS, ids=lambda b: b.name)
def test_a_readme_routes_fragment_passes_check(block: Block, tmp_path):
    fragment = load_yaml(block.text)
    assert isinstance(fragment, dict), f"{block.name}: not a mapping; mark it <!-- not-routes --> if it is not routes.yaml"
    document = merged(load_yaml((PROJECT_ROOT / "routes.yaml").read_text()), fragment)
    path = tmp_path / "routes.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    env = {**os.environ, **{name: dummy(name) for name in _ENV.findall(block.text)}}
    result = subprocess.run([sys.executable, "-m", "router", "check", str(path)], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, f"{block.name}:\n{result.stderr}"
