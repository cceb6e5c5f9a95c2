"""The Grafana dashboard: unknown aliases read (unknown), and spend with no team can be picked as (none).

The gateway leaves the ``team`` label empty (so absent, to Prometheus) on
spend without a team; the dashboard names it ``(none)`` with
``label_replace`` in the team variable's query and in every panel the
variable filters.  Grafana and Prometheus do not run here: the regex steps
are checked with the rules they apply (Grafana escapes a multi-value
selection, Prometheus matches label_replace's regex against the whole value).
"""

from __future__ import annotations

import json
import re

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import PROJECT_ROOT

DASHBOARD = PROJECT_ROOT / "deploy" / "grafana" / "dashboards" / "llm-router.json"
NONE_MAPPING = 'label_replace(llm_router_cost_usd_total, "team", "(none)", "team", "")'


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def team_variable() -> dict:
    return next(v for v in dashboard()["templating"]["list"] if v["name"] == "team")


def exprs() -> list[str]:
    return [t["expr"] for p in dashboard()["panels"] for t in p.get("targets", []) if "expr" in t]


def grafana_regex_escape(value: str) -> str:
    """Grafana's prometheusSpecialRegexEscape, as written into the query text (a PromQL string)."""
    return re.sub(r"([$^*{}\[\]'+?.()|])", r"\\\\\1", value.replace("\\", "\\\\\\\\"))


def interpolate(selection: list[str], variable: dict) -> str:
    """$team as Grafana writes it for a multi-value variable: one escaped value, or (a|b)."""
    if selection == ["$__all"]:
        return variable["allValue"]
    escaped = [grafana_regex_escape(v) for v in selection]
    return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"


def promql_string(text: str) -> str:
    return text.encode().decode("unicode_escape")


def test_the_team_variable_lists_no_team_as_none():
    variable = team_variable()
    assert NONE_MAPPING.removeprefix("label_replace(") in variable["definition"]
    assert variable["query"]["query"] == variable["definition"]
    assert variable["definition"].startswith("query_result(")
    # query_result answers one line per series; the variable's regex takes each team from it.
    answer = ['{team="(none)"} 0.5 1700000000000', '{team="search"} 1.25 1700000000000']
    regex = re.compile(variable["regex"].strip("/"))
    assert [regex.search(line).group(1) for line in answer] == ["(none)", "search"]


def test_every_panel_the_team_variable_filters_keeps_spend_with_no_team_selectable():
    filtered = [e for e in exprs() if "$team" in e]
    assert len(filtered) >= 5
    for expr in filtered:
        assert '{team=~"$team"}' not in expr, f"a selector on team hides the spend with no team: {expr}"
        assert '"team", "(none)", "team", ""' in expr and '"team_selected", "1", "team", "$team"' in expr
        assert "unless on(team_selected) vector(1)" in expr


def test_a_selection_of_none_matches_spend_with_no_team_and_nothing_else():
    variable = team_variable()

    def selected(selection: list[str], team: str) -> bool:
        # Prometheus: label_replace sets team_selected only where the regex matches the whole (mapped) team.
        mapped = team or "(none)"
        return re.fullmatch(promql_string(interpolate(selection, variable)), mapped) is not None

    assert selected(["(none)"], "") and not selected(["(none)"], "search")
    assert selected(["search", "(none)"], "") and selected(["search", "(none)"], "search") and not selected(["search", "(none)"], "ads")
    assert selected(["$__all"], "") and selected(["$__all"], "ads")
    assert not selected(["search"], "")


async def test_the_gateway_leaves_no_team_empty_and_names_an_unknown_alias_unknown(start_gateway):
    config = {
        "providers": {"mock": {"kind": "mock"}},
        "models": {"chat": {"targets": [{"provider": "mock", "model": "m", "price": {"input": 1, "output": 1}}]}},
    }
    gw = await start_gateway(config)
    async with aiohttp.ClientSession() as s:
        for model, status in (("chat", 200), ("no-such-alias", 404)):
            async with s.post(gw.url + "/v1/chat/completions", json={"model": model, "messages": [{"role": "user", "content": "hi"}]}) as r:
                assert r.status == status
        async with s.get(gw.url + "/metrics") as r:
            families = {f.name: f for f in text_string_to_metric_families(await r.text())}
    requests = [s for s in families["llm_router_requests"].samples if s.name == "llm_router_requests_total"]
    assert {(s.labels["alias"], s.labels["status"]) for s in requests} == {("chat", "200"), ("(unknown)", "404")}
    cost = [s for s in families["llm_router_cost_usd"].samples if s.name == "llm_router_cost_usd_total"]
    assert [s.labels.get("team", "") for s in cost] == [""]  # what the dashboard's label_replace names (none)
