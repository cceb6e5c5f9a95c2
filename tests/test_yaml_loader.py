"""routes.yaml means what it says: YAML 1.2 booleans, duplicate keys refused with path and line, 429 as a number."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from router.config import ConfigError, load_table
from router.yaml_loader import DuplicateKeyError, load_yaml

MINIMAL = """\
providers:
  m: {kind: mock}
models:
  chat:
    targets: [{provider: m, model: x}]
"""


def check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "router", "check", str(path)], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("word", ["on", "off", "yes", "no", "y", "n", "On", "YES", "Off"])
def test_yaml_1_1_booleans_are_strings(word):
    assert load_yaml(f"{word}: {word}\nlist: [{word}]\n") == {word: word, "list": [word]}


@pytest.mark.parametrize(("word", "value"), [("true", True), ("false", False), ("True", True), ("FALSE", False)])
def test_yaml_1_2_booleans_stay_booleans(word, value):
    assert load_yaml(f"flag: {word}\n") == {"flag": value}


def test_the_global_safe_loader_is_left_as_it_was():
    load_yaml("on: 1\n")
    assert yaml.safe_load("on: 1\n") == {True: 1}


def test_numbers_and_nulls_are_read_as_before_and_dates_stay_strings():
    assert load_yaml("a: 1\nb: 1.5\nc: null\nd: ~\ne: 2026-11-01\nf: '429'\ng: 2027-01-01T00:00:00Z\n") == {
        "a": 1,
        "b": 1.5,
        "c": None,
        "d": None,
        "e": "2026-11-01",
        "f": "429",
        "g": "2027-01-01T00:00:00Z",
    }


def test_a_price_version_written_as_a_date_and_an_unquoted_expiry_are_read(tmp_path):
    path = tmp_path / "routes.yaml"
    path.write_text(
        "auth:\n  keys:\n    bot: {key: k-0123456789abcdef, expires_at: 2030-01-01T00:00:00Z}\n"
        "providers:\n  m: {kind: mock}\n"
        "models:\n  chat:\n    targets: [{provider: m, model: x, price: {input: 1, output: 2, version: 2026-11-01}}]\n"
    )
    table = load_table(path, env={})
    assert table.aliases["chat"].targets[0].price.version == "2026-11-01"
    assert [k.expires_at for k in table.auth.keys_by_hash.values()] == [1893456000.0]


def test_a_duplicate_key_names_its_path_and_both_lines():
    text = MINIMAL + "  other:\n    targets: [{provider: m, model: y}]\n  chat:\n    targets: [{provider: m, model: z}]\n"
    with pytest.raises(DuplicateKeyError) as info:
        load_yaml(text)
    assert (info.value.path, info.value.line, info.value.first_line) == ("models.chat", 8, 4)


def test_a_duplicate_key_inside_a_list_item_is_found_too():
    with pytest.raises(DuplicateKeyError) as info:
        load_yaml("models:\n  chat:\n    targets:\n      - provider: m\n        model: x\n        model: y\n")
    assert (info.value.path, info.value.line) == ("models.chat.targets[0].model", 6)


def test_merge_keys_and_anchors_are_not_duplicates():
    doc = load_yaml("base: &b {kind: mock}\nproviders:\n  a: *b\n  c:\n    <<: *b\n    options: {}\n")
    assert doc["providers"]["c"] == {"kind": "mock", "options": {}}


def test_load_table_refuses_a_duplicate_alias_with_path_and_line(tmp_path):
    path = tmp_path / "routes.yaml"
    path.write_text(MINIMAL + "  chat:\n    targets: [{provider: m, model: y}]\n")
    with pytest.raises(ConfigError) as info:
        load_table(path, env={})
    assert info.value.issues == [("models.chat", "line 6: duplicate key (first on line 4); each key may appear once")]


def test_check_fails_on_a_duplicate_alias_in_one_line_without_a_traceback(tmp_path):
    path = tmp_path / "routes.yaml"
    path.write_text(MINIMAL + "  chat:\n    targets: [{provider: m, model: y}]\n")
    result = check(path)
    assert result.returncode == 1
    assert f"{path}: models.chat: line 6: duplicate key" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize("on", ["[connect, timeout, 429, 5xx]", '[connect, timeout, "429", 5xx]', "[429]"])
def test_retry_on_takes_an_unquoted_key_and_429_as_number_or_string(tmp_path, on):
    path = tmp_path / "routes.yaml"
    path.write_text(MINIMAL + f"    retry: {{attempts: 2, on: {on}}}\n")
    table = load_table(path, env={})
    assert "429" in table.aliases["chat"].retry.retry_on
    assert check(path).returncode == 0


@pytest.mark.parametrize("on", ["[connect, 404]", "[true]", "[connect, 5XX]"])
def test_retry_on_still_refuses_what_it_cannot_retry(tmp_path, on):
    path = tmp_path / "routes.yaml"
    path.write_text(MINIMAL + f"    retry: {{on: {on}}}\n")
    with pytest.raises(ConfigError) as info:
        load_table(path, env={})
    assert "must be a list of: connect, timeout, 429, 5xx" in dict(info.value.issues)["models.chat.retry.on"]


def test_a_bare_no_is_a_string_where_a_name_is_expected(tmp_path):
    # YAML 1.1 would read the alias `no` as False and the model `off` as a boolean.
    path = tmp_path / "routes.yaml"
    path.write_text("providers:\n  m: {kind: mock}\nmodels:\n  no:\n    targets: [{provider: m, model: off}]\n")
    table = load_table(path, env={})
    assert table.aliases["no"].targets[0].model == "off"
