"""The JSON Schema of routes.yaml: made from the declarations, it accepts what ships and refuses planted mistakes."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from typing import Any

import jsonschema
import pytest

from router.auth.settings import AuthSettings, ConfigKeyEntry, TeamEntry
from router.config import (
    Alias,
    HealthPolicy,
    LedgerSettings,
    LoggingSettings,
    Provider,
    RetryPolicy,
    ServerSettings,
    SinkSettings,
    StateSettings,
    Target,
    Timeouts,
    json_schema,
)
from router.schema import Limits, Price, declared
from router.yaml_loader import load_yaml
from tests.conftest import PROJECT_ROOT

SHIPPED = [PROJECT_ROOT / "routes.yaml", PROJECT_ROOT / "deploy" / "config" / "routes.yaml"]


def validator() -> jsonschema.Draft202012Validator:
    schema = json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(PROJECT_ROOT)))
def test_the_schema_accepts_the_shipped_route_tables(path):
    document = load_yaml(path.read_text())
    errors = [e.message for e in validator().iter_errors(document)]
    assert errors == []


def shipped() -> dict[str, Any]:
    return copy.deepcopy(load_yaml(SHIPPED[0].read_text()))


def planted(change: str) -> dict[str, Any]:
    doc = shipped()
    if change == "unknown field":
        doc["models"]["chat"]["targets"][0]["wieght"] = 2
    elif change == "wrong type":
        doc["server"]["port"] = "eighty"
    elif change == "below minimum":
        doc["server"]["max_body_bytes"] = 10
    elif change == "unknown strategy":
        doc["models"]["chat"]["strategy"] = "fastest"
    elif change == "above maximum":
        doc["state"] = {"pool_size": 10_001}
    elif change == "unknown provider kind":
        doc["providers"]["mock"]["kind"] = "nosuch"
    return doc


@pytest.mark.parametrize("change", ["unknown field", "wrong type", "below minimum", "unknown strategy", "above maximum", "unknown provider kind"])
def test_the_schema_refuses_a_planted_mistake(change):
    assert not validator().is_valid(planted(change))


def test_interpolated_and_differently_cased_values_are_accepted_as_the_reader_accepts_them():
    doc = shipped()
    doc["logging"] = {"level": "INFO", "format": "${LOG_FORMAT:-json}"}
    assert validator().is_valid(doc)


def test_llm_router_schema_prints_the_shipped_schema_file():
    result = subprocess.run([sys.executable, "-m", "router", "schema"], capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=60)
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert printed == json.loads((PROJECT_ROOT / "docs" / "routes.schema.json").read_text()), "run: llm-router schema > docs/routes.schema.json"
    assert printed["$schema"] == "https://json-schema.org/draft/2020-12/schema" and printed["$id"]


def node(schema: dict[str, Any], *path: str) -> dict[str, Any]:
    for step in path:
        schema = schema["items"] if step == "[]" else schema["additionalProperties"] if step == "*" else schema["properties"][step]
    return schema


SECTIONS = [
    (ServerSettings, ("server",)),
    (LoggingSettings, ("logging",)),
    (StateSettings, ("state",)),
    (AuthSettings, ("auth",)),
    (TeamEntry, ("auth", "teams", "*")),
    (ConfigKeyEntry, ("auth", "keys", "*")),
    (Limits, ("auth", "keys", "*", "limits")),
    (Provider, ("providers", "*")),
    (Timeouts, ("providers", "*", "timeouts")),
    (HealthPolicy, ("providers", "*", "health")),
    (Alias, ("models", "*")),
    (RetryPolicy, ("models", "*", "retry")),
    (Target, ("models", "*", "targets", "[]")),
    (Price, ("models", "*", "targets", "[]", "price")),
    (LedgerSettings, ("ledger",)),
    (SinkSettings, ("ledger", "sinks", "[]")),
]


@pytest.mark.parametrize(("cls", "path"), SECTIONS, ids=lambda v: v.__name__ if isinstance(v, type) else ".".join(v))
def test_every_field_the_reader_accepts_is_in_the_schema_with_a_description(cls, path):
    section = node(json_schema(), *path)
    assert section["additionalProperties"] is False
    keys = {d.key for d in declared(cls)} - ({"name"} if cls is TeamEntry else set())
    assert keys and keys == set(section["properties"])
    for key in keys:
        assert section["properties"][key]["description"], key


def test_new_fields_carry_their_defaults_and_bounds():
    schema = json_schema()
    assert node(schema, "state", "pool_size").items() >= {"default": 32, "minimum": 1, "maximum": 10000}.items()
    assert node(schema, "state", "pool_timeout")["default"] == 2.0
    assert node(schema, "state", "outage_probes").items() >= {"default": 3, "minimum": 1, "maximum": 100}.items()
    assert node(schema, "server", "max_in_flight").items() >= {"default": 1024, "minimum": 1, "maximum": 1_000_000}.items()
    assert node(schema, "state", "timeout")["default"] == 0.25
