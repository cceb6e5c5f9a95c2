"""routes.yaml validation: every mistake named with its file and path; `llm-router check`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from router.config import ConfigError, load_table, parse_table
from tests.conftest import PROJECT_ROOT


def issues_of(doc: object, env: dict[str, str] | None = None) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        parse_table(doc, "routes.yaml", env or {})
    return dict(info.value.issues)


def test_the_shipped_routes_yaml_is_valid_and_needs_no_keys():
    table = load_table(PROJECT_ROOT / "routes.yaml", env={})
    assert "chat" in table.aliases
    assert all(p.kind == "mock" for p in table.providers.values())


def test_mistakes_are_collected_with_their_paths():
    issues = issues_of(
        {
            "providers": {
                "good": {"kind": "mock"},
                "bad": {"kind": "nosuch"},
                "nourl": {"kind": "openai", "base_url": "ftp://x", "timeouts": {"read": "slow"}},
            },
            "models": {
                "chat": {"targets": [{"provider": "good", "model": "m"}, {"provider": "ghost", "model": "m"}], "fallbacks": ["missing"], "strategy": "fastest"},
                "empty": {"targets": []},
                "typo": {"targets": [{"provider": "good", "model": "m", "wieght": 2}]},
            },
        }
    )
    assert "unknown provider kind 'nosuch'" in issues["providers.bad.kind"]
    assert "must start with http" in issues["providers.nourl.base_url"]
    assert "must be a number" in issues["providers.nourl.timeouts.read"]
    assert "unknown provider 'ghost'" in issues["models.chat.targets[1].provider"]
    assert "declared providers: good" in issues["models.chat.targets[1].provider"]
    assert "unknown alias 'missing'" in issues["models.chat.fallbacks[0]"]
    assert "unknown strategy 'fastest'" in issues["models.chat.strategy"]
    assert "non-empty list" in issues["models.empty.targets"]
    assert "unknown field" in issues["models.typo.targets[0].wieght"]


def test_unset_environment_variable_is_named():
    issues = issues_of(
        {
            "providers": {"forii": {"kind": "openai", "base_url": "https://x", "api_key": "${FORII_API_KEY}"}},
            "models": {"chat": {"targets": [{"provider": "forii", "model": "m"}]}},
        }
    )
    assert "FORII_API_KEY is not set" in issues["providers.forii.api_key"]


def test_environment_variables_and_defaults_are_interpolated():
    table = parse_table(
        {
            "providers": {"p": {"kind": "openai", "base_url": "${BASE:-https://default.example/v1}", "api_key": "${KEY}"}},
            "models": {"chat": {"targets": [{"provider": "p", "model": "m"}]}},
        },
        "routes.yaml",
        {"KEY": "sk-secret-value-123456"},
    )
    provider = table.providers["p"]
    assert provider.base_url == "https://default.example/v1"
    assert provider.api_key is not None and provider.api_key.reveal() == "sk-secret-value-123456"
    assert "sk-secret" not in repr(provider)


def test_an_alias_whose_target_cannot_serve_it_is_refused():
    issues = issues_of(
        {
            "providers": {"ia": {"kind": "interactive", "base_url": "https://x/api/v1"}},
            "models": {"chat": {"operations": ["chat"], "targets": [{"provider": "ia", "model": "m"}]}},
        }
    )
    assert "cannot serve chat" in issues["models.chat.targets[0]"]


def test_prices_are_exact_decimals():
    table = parse_table(
        {
            "providers": {"m": {"kind": "mock"}},
            "models": {"chat": {"targets": [{"provider": "m", "model": "x", "price": {"input": 0.15, "output": "0.6", "version": "2026-11"}}]}},
        },
        "r",
        {},
    )
    price = table.aliases["chat"].targets[0].price
    assert price is not None and str(price.input) == "0.15" and str(price.output) == "0.6" and price.version == "2026-11"


def test_wildcard_alias_passes_the_requested_name_on():
    table = parse_table(
        {
            "providers": {"f": {"kind": "openai", "base_url": "https://x"}},
            "models": {"forii/*": {"targets": [{"provider": "f"}]}, "ff/*": {"targets": [{"provider": "f", "model": "*"}]}},
        },
        "r",
        {},
    )
    alias = table.lookup("forii/deepseek-v3")
    assert alias is not None and alias.targets[0].for_model("forii/deepseek-v3", "forii/").model == "forii/deepseek-v3"
    short = table.lookup("ff/llama")
    assert short is not None and short.targets[0].for_model("ff/llama", "ff/").model == "llama"
    assert table.lookup("other") is None


def run_check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "router", "check", str(path)], capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=60)


def test_check_command_on_a_broken_file_names_each_mistake(tmp_path):
    broken = tmp_path / "routes.yaml"
    broken.write_text(
        "providers:\n  a: {kind: mock}\nmodels:\n  chat:\n    targets:\n      - {provider: a, model: m}\n      - {provider: b, model: m}\n    strategy: nope\n"
    )
    result = run_check(broken)
    assert result.returncode != 0
    assert f"{broken}: models.chat.targets[1].provider: unknown provider 'b'" in result.stderr
    assert f"{broken}: models.chat.strategy:" in result.stderr


def test_check_command_on_invalid_yaml(tmp_path):
    broken = tmp_path / "routes.yaml"
    broken.write_text("providers: [\n")
    result = run_check(broken)
    assert result.returncode != 0
    assert "not valid YAML" in result.stderr


def test_check_command_prints_aliases_and_targets():
    result = run_check(PROJECT_ROOT / "routes.yaml")
    assert result.returncode == 0, result.stderr
    assert "chat [chat, completion" in result.stdout
    assert "mock -> mock-chat" in result.stdout


def test_new_state_and_server_fields_are_read_and_bounded():
    base = {"providers": {"m": {"kind": "mock"}}, "models": {"chat": {"targets": [{"provider": "m", "model": "x"}]}}}
    table = parse_table({**base, "state": {"pool_size": 8, "pool_timeout": 0.5, "outage_probes": 5}, "server": {"max_in_flight": 64}}, "r", {})
    assert (table.state.pool_size, table.state.pool_timeout, table.state.outage_probes, table.server.max_in_flight) == (8, 0.5, 5, 64)
    defaults = parse_table(base, "r", {})
    assert (defaults.state.pool_size, defaults.state.pool_timeout, defaults.state.outage_probes, defaults.state.timeout) == (32, 2.0, 3, 0.25)
    assert defaults.server.max_in_flight == 1024
    issues = issues_of({**base, "state": {"pool_size": 0, "outage_probes": 101}, "server": {"max_in_flight": 2_000_000}})
    assert "must be at least 1" in issues["state.pool_size"]
    assert "must be at most 100" in issues["state.outage_probes"]
    assert "must be at most 1000000" in issues["server.max_in_flight"]


def test_an_unquoted_on_key_is_named_with_its_remedy():
    issues = issues_of(yaml.safe_load("providers: {m: {kind: mock}}\nmodels: {chat: {targets: [{provider: m, model: x}], retry: {on: [5xx]}}}\n"))
    assert "quote it" in issues["models.chat.retry.True"]
