"""deploy/: the image's entry point serves, compose and Kubernetes manifests hold what they must."""

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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from router.config import parse_table
from router.yaml_loader import load_yaml
from tests.conftest import PROJECT_ROOT, _ready, free_port, wait_for

DEPLOY = PROJECT_ROOT / "deploy"
K8S = DEPLOY / "k8s"
IMAGE_VENV = "/opt/llm-router"
ADMIN_TOKEN = "admin-token-for-the-deploy-test-0123"
DUMMY_KEYS = {
    "ROUTER_ADMIN_TOKEN": ADMIN_TOKEN,
    "ROUTER_CLIENT_KEY": "client-key-for-the-deploy-test-0123",
    "FORII_API_KEY": "sk-forii-dummy-0123456789abcdef",
    "FOREFRONT_API_KEY": "ff-dummy-0123456789abcdef",
    "INTERACTIVE_API_KEY": "",
}


# -- the Dockerfile, read as the image would run it ----------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (DEPLOY / "Dockerfile").read_text()
    text = re.sub(r"\\\n", " ", text)  # join continuation lines
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]


def final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile_instructions()
    last_from = max(i for i, (op, _) in enumerate(instructions) if op == "FROM")
    return instructions[last_from:]


def image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for op, args in final_stage():
        if op == "ENV":
            for pair in shlex.split(args):
                name, _, value = pair.partition("=")
                env[name] = value
    return env


def image_copies() -> dict[str, Path]:
    """Container path -> the repository file the final stage copies there."""
    copies = {}
    for op, args in final_stage():
        if op == "COPY" and not args.startswith("--from"):
            source, dest = args.split()
            copies[dest] = PROJECT_ROOT / source
    return copies


def exec_form(op: str) -> list[str]:
    args = next(a for o, a in final_stage() if o == op)
    return list(json.loads(args))


def test_dockerfile_is_slim_non_root_and_installs_the_repo():
    ops = dockerfile_instructions()
    assert all("slim" in args for op, args in ops if op == "FROM")
    user = next(args for op, args in final_stage() if op == "USER")
    assert user.split(":")[0] not in ("root", "0")
    assert any(op == "RUN" and "pip install" in args and " ." in args for op, args in ops)
    assert exec_form("ENTRYPOINT") + exec_form("CMD") == ["llm-router", "serve"]
    healthcheck = next(args for op, args in final_stage() if op == "HEALTHCHECK")
    assert "/healthz" in healthcheck
    for dest, source in image_copies().items():
        assert source.exists(), f"COPY {source} {dest}: no such file in the repository"


def _localise(value: str, config: Path) -> str:
    """Container paths -> the same files outside it: the image's venv is ours, its routes.yaml is the repo's."""
    value = value.replace("$PATH", os.environ.get("PATH", "")).replace(IMAGE_VENV, sys.prefix)
    for dest in image_copies():
        value = value.replace(dest, str(config))
    return value


async def test_the_image_entry_point_run_outside_a_container_serves_a_request(redis_url, redis_prefix, tmp_path):
    config = image_copies()["/etc/llm-router/routes.yaml"]
    port = free_port()  # the one deviation from the image's environment: 8080 may be taken here
    env = {
        **os.environ,
        **{k: _localise(v, config) for k, v in image_env().items()},
        **DUMMY_KEYS,
        "REDIS_URL": redis_url,
        "ROUTER_REDIS_PREFIX": redis_prefix,
        "ROUTER_PORT": str(port),
    }
    command = [_localise(part, config) for part in exec_form("ENTRYPOINT") + exec_form("CMD")]
    assert shutil.which(command[0], path=env["PATH"]), f"{command[0]} is not on the image's PATH"
    proc = await asyncio.create_subprocess_exec(*command, env=env, cwd=str(tmp_path), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        await wait_for(lambda: _ready(url), timeout=20, interval=0.05)
        async with aiohttp.ClientSession() as session:
            # Auth is on in the shipped config: an operator makes a key through the admin API first.
            async with session.post(url + "/admin/keys", json={"name": "smoke", "aliases": ["smoke"]}, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as r:
                created = await r.json()
                assert r.status == 201, created
            async with session.post(
                url + "/v1/chat/completions",
                json={"model": "smoke", "messages": [{"role": "user", "content": "hi"}]},
                headers={"Authorization": f"Bearer {created['key']}"},
            ) as r:
                body = await r.json()
                assert r.status == 200, body
                assert body["choices"][0]["message"]["content"]
        # The image's HEALTHCHECK command, run with the same environment, passes against it.
        healthcheck = json.loads(next(args for op, args in final_stage() if op == "HEALTHCHECK").split("CMD", 1)[1])
        check = await asyncio.create_subprocess_exec(*[_localise(p, config) for p in healthcheck], env=env)
        assert await check.wait() == 0
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = await asyncio.wait_for(proc.communicate(), 15)
    assert proc.returncode == 0
    lines = [json.loads(line) for line in out.decode().splitlines()]  # the image logs JSON
    assert [line["alias"] for line in lines if line.get("event") == "request"] == ["smoke"]
    assert DUMMY_KEYS["FORII_API_KEY"] not in out.decode()


# -- compose -------------------------------------------------------------------


def compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "docker-compose.yaml").read_text())


def test_compose_runs_two_gateways_redis_prometheus_and_grafana():
    services = compose()["services"]
    gateways = [name for name, s in services.items() if s.get("build", {}).get("dockerfile") == "deploy/Dockerfile"]
    assert len(gateways) == 2
    assert {"redis", "prometheus", "grafana"} <= services.keys()
    for name in gateways:
        gateway = services[name]
        assert gateway["environment"]["REDIS_URL"].startswith("redis://redis:")
        assert {"ROUTER_ADMIN_TOKEN", "ROUTER_CLIENT_KEY", "FORII_API_KEY", "ROUTER_LOG_FORMAT"} <= gateway["environment"].keys()
        for name in ("ROUTER_ADMIN_TOKEN", "ROUTER_CLIENT_KEY"):  # required: compose refuses to start without them
            assert gateway["environment"][name].startswith("${" + name + ":?"), gateway["environment"][name]
        assert any(v.endswith(":/etc/llm-router:ro") for v in gateway["volumes"])
    scrape = yaml.safe_load((DEPLOY / "prometheus-compose.yml").read_text())
    targets = {t for job in scrape["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]}
    assert targets == {f"{name}:8080" for name in gateways}
    assert any(v.startswith("./prometheus-compose.yml:") for v in services["prometheus"]["volumes"])
    assert (DEPLOY / "config" / "routes.yaml").exists()


def env_example() -> dict[str, str]:
    """deploy/.env.example as compose reads a .env file: NAME=value lines, comments and blanks skipped."""
    values = {}
    for line in (DEPLOY / ".env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value
    return values


_COMPOSE_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::([?-])([^}]*))?\}")


def compose_interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ${NAME}, ${NAME:-default} and ${NAME:?error} (refuses, as compose does, when NAME is unset or empty)."""

    def substitute(match: re.Match[str]) -> str:
        name, op, arg = match.groups()
        if env.get(name):
            return env[name]
        assert op != "?", f"compose refuses to start: {name}: {arg}"
        return arg if op == "-" else env.get(name, "")

    return _COMPOSE_VAR.sub(substitute, str(value))


def gateway_environment(values: dict[str, str]) -> dict[str, str]:
    """The environment compose gives gateway-1, with ``values`` as deploy/.env."""
    return {name: compose_interpolate(v, values) for name, v in compose()["services"]["gateway-1"]["environment"].items()}


def curl_request(command: str, env: dict[str, str]) -> tuple[str, str, dict[str, str], Any]:
    """(method, URL, headers, JSON body) of one curl command line, its $VARS read from ``env`` as a shell would."""
    words = [re.sub(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", lambda m: env[m.group(1)], w) for w in shlex.split(command)]
    assert words[0] == "curl", command
    url, headers, body = "", {}, None
    i = 1
    while i < len(words):
        word = words[i]
        if word == "-H":
            name, _, value = words[i + 1].partition(":")
            headers[name.strip().lower()] = value.strip()
            i += 2
        elif word in ("-d", "--data"):
            body = json.loads(words[i + 1])
            i += 2
        elif word == "-s":
            i += 1
        else:
            assert not word.startswith("-"), f"{word}: an option this test does not read"
            url = word if "://" in word else "http://" + word
            i += 1
    return ("POST" if body is not None else "GET"), url, headers, body


def compose_smoke_command() -> str:
    """The smoke curl in docker-compose.yaml's header comment, continuation lines joined."""
    header = []
    for line in (DEPLOY / "docker-compose.yaml").read_text().splitlines():
        if not line.startswith("#"):
            break
        header.append(line[1:].strip())
    joined = re.sub(r"\\\n", " ", "\n".join(header))
    return next(line for line in joined.splitlines() if line.startswith("curl ") and "smoke" in line)


def test_the_deploy_readme_shows_the_same_smoke_request_as_the_compose_file():
    text = re.sub(r"\\\n", " ", (DEPLOY / "README.md").read_text())
    commands = [line.strip() for line in text.splitlines() if line.strip().startswith("curl ") and '"smoke"' in line]
    env = env_example()
    assert [curl_request(c, env) for c in commands] == [curl_request(compose_smoke_command(), env)]


def test_compose_refuses_to_start_without_the_admin_token_and_the_client_key():
    for name in ("ROUTER_ADMIN_TOKEN", "ROUTER_CLIENT_KEY"):
        with pytest.raises(AssertionError, match=f"compose refuses to start: {name}"):
            gateway_environment({k: v for k, v in env_example().items() if k != name})


def test_the_deploy_config_without_the_client_key_is_refused_in_one_line_naming_it(tmp_path):
    env = {k: v for k, v in {**os.environ, **DUMMY_KEYS}.items() if k != "ROUTER_CLIENT_KEY"}
    result = subprocess.run(
        [sys.executable, "-m", "router", "check", str(DEPLOY / "config" / "routes.yaml")], capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == 1
    assert "auth.keys.client.key: environment variable ROUTER_CLIENT_KEY is not set" in result.stderr
    assert "Traceback" not in result.stderr


async def test_the_compose_smoke_request_answers_200_on_the_deploy_config_with_the_documented_environment(redis_url, redis_prefix, tmp_path):
    values = env_example()
    port = free_port()
    # compose's environment for a gateway, with deploy/.env.example as deploy/.env; Redis and the port are this machine's.
    env = {**os.environ, **gateway_environment(values), "REDIS_URL": redis_url, "ROUTER_REDIS_PREFIX": redis_prefix, "ROUTER_PORT": str(port)}
    env["ROUTER_HOST"] = "127.0.0.1"
    command = [sys.executable, "-m", "router", "serve", "--config", str(DEPLOY / "config" / "routes.yaml")]
    proc = await asyncio.create_subprocess_exec(*command, env=env, cwd=str(tmp_path), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        await wait_for(lambda: _ready(url), timeout=20, interval=0.05)
        method, smoke_url, headers, body = curl_request(compose_smoke_command(), values)
        assert (method, smoke_url.split("/", 3)[3]) == ("POST", "v1/chat/completions")
        target = url + "/" + smoke_url.split("/", 3)[3]
        async with aiohttp.ClientSession() as session:
            async with session.post(target, json=body, headers=headers) as r:
                answer = await r.json()
                assert r.status == 200, answer
                assert answer["choices"][0]["message"]["content"]
            async with session.post(target, json=body, headers={k: v for k, v in headers.items() if k != "authorization"}) as r:
                assert r.status == 401  # auth is on: the key is what makes it answer
            async with session.get(url + "/admin/keys", headers={"Authorization": f"Bearer {values['ROUTER_ADMIN_TOKEN']}"}) as r:
                assert r.status == 200, await r.text()
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = await asyncio.wait_for(proc.communicate(), 15)
    assert proc.returncode == 0, out.decode()
    assert values["ROUTER_CLIENT_KEY"] not in out.decode()


def mounted(volumes: list[str], base: Path) -> Callable[[str], Path]:
    """Container path -> the file or folder of the repository that a set of ``host:container[:ro]`` mounts puts there."""
    mounts = {}
    for volume in volumes:
        host, container = volume.split(":")[:2]
        mounts[container.rstrip("/")] = (base / host.replace("$PWD/", "")).resolve()

    def on_host(path: str) -> Path:
        for container in sorted(mounts, key=len, reverse=True):
            if path == container or path.startswith(container + "/"):
                return mounts[container] / path[len(container) :].lstrip("/")
        raise AssertionError(f"nothing is mounted at {path}")

    return on_host


def assert_grafana_finds_its_files(on_host: Callable[[str], Path], prometheus_url: str) -> None:
    datasources = sorted(on_host("/etc/grafana/provisioning/datasources").glob("*.y*ml"))
    dashboards = sorted(on_host("/etc/grafana/provisioning/dashboards").glob("*.y*ml"))
    assert datasources and dashboards, "Grafana reads provisioning from /etc/grafana/provisioning/{datasources,dashboards}"
    (source,) = yaml.safe_load(datasources[0].read_text())["datasources"]
    assert source["url"].replace("${PROMETHEUS_URL}", prometheus_url) == prometheus_url
    assert source["url"] == "${PROMETHEUS_URL}"
    for provider_file in dashboards:
        for provider in yaml.safe_load(provider_file.read_text())["providers"]:
            folder = on_host(provider["options"]["path"])
            assert [p.name for p in folder.glob("*.json")] == ["llm-router.json"], f"{provider['options']['path']} -> {folder}"
            dashboard = json.loads((folder / "llm-router.json").read_text())
            assert dashboard["panels"]


def test_one_grafana_provisioning_tree_mounted_where_grafana_looks_for_it():
    services = compose()["services"]
    grafana = services["grafana"]
    prometheus_url = grafana["environment"]["PROMETHEUS_URL"]
    assert prometheus_url == "http://prometheus:9090" and "9090:9090" in services["prometheus"]["ports"]
    assert_grafana_finds_its_files(mounted(grafana["volumes"], DEPLOY), prometheus_url)
    trees = sorted(str(p.relative_to(DEPLOY)) for p in DEPLOY.rglob("*provisioning*") if p.is_dir())
    assert trees == ["grafana/provisioning"]


def _compose_plugin() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0


@pytest.mark.skipif(not _compose_plugin(), reason="the docker compose plugin is not installed here (the structure is checked by the test above)")
def test_docker_compose_config_validates():
    command = ["docker", "compose", "--env-file", str(DEPLOY / ".env.example"), "-f", str(DEPLOY / "docker-compose.yaml"), "config", "--quiet"]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# -- Kubernetes ----------------------------------------------------------------


def manifests() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") != "Kustomization":
                assert doc.get("apiVersion") and doc.get("metadata", {}).get("name"), f"{path.name}: apiVersion and metadata.name are required"
                assert doc["kind"] not in found, f"two {doc['kind']} manifests"
                found[doc["kind"]] = doc
    return found


def test_kubernetes_manifests_have_the_fields_each_kind_requires():
    m = manifests()
    assert {"Deployment", "Service", "ConfigMap", "PodDisruptionBudget", "HorizontalPodAutoscaler"} <= m.keys()
    deployment, service, configmap, pdb, hpa = (m[k] for k in ("Deployment", "Service", "ConfigMap", "PodDisruptionBudget", "HorizontalPodAutoscaler"))

    assert deployment["apiVersion"] == "apps/v1"
    pod = deployment["spec"]["template"]
    labels = pod["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    container = pod["spec"]["containers"][0]
    assert container["name"] and container["image"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    secret_refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "secretKeyRef" in e.get("valueFrom", {})}
    assert {"FORII_API_KEY", "FOREFRONT_API_KEY", "INTERACTIVE_API_KEY", "ROUTER_ADMIN_TOKEN", "ROUTER_CLIENT_KEY", "REDIS_URL"} <= secret_refs.keys()
    assert all(ref["name"] and ref["key"] for ref in secret_refs.values())
    assert not any("value" in e and "KEY" in e["name"] for e in container["env"]), "a key written in the manifest"
    assert container["resources"]["requests"]["cpu"], "the HPA's CPU target needs a CPU request"
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True

    routes_text = configmap["data"]["routes.yaml"]
    assert routes_text == (DEPLOY / "config" / "routes.yaml").read_text(), "the ConfigMap drifted from deploy/config/routes.yaml"
    table = parse_table(load_yaml(routes_text), "configmap", {**DUMMY_KEYS, "REDIS_URL": "redis://redis:6379/0"})
    mounts = {v["name"]: v["mountPath"] for v in container["volumeMounts"]}
    config_volume = next(v for v in pod["spec"]["volumes"] if v.get("configMap", {}).get("name") == configmap["metadata"]["name"])
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["ROUTER_CONFIG"] == mounts[config_volume["name"]] + "/routes.yaml"
    # Kubernetes kills at terminationGracePeriodSeconds, counted from the start of preStop.
    assert pod["spec"]["terminationGracePeriodSeconds"] > float(pre_stop[1]) + table.server.shutdown_grace
    assert int(env["ROUTER_PORT"]) == ports["http"]

    assert service["apiVersion"] == "v1"
    assert service["spec"]["selector"].items() <= labels.items()
    assert all(p["port"] and p["targetPort"] in ports for p in service["spec"]["ports"])

    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert ("minAvailable" in pdb["spec"]) != ("maxUnavailable" in pdb["spec"])

    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    assert hpa["spec"]["metrics"]
    assert pdb["spec"].get("minAvailable", 0) < hpa["spec"]["minReplicas"], "a PDB as large as the floor blocks every drain"


def test_kustomization_lists_every_manifest():
    listed = set(yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"])
    assert listed == {p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml"}


def test_deploy_readme_has_one_table_with_every_variable_the_deployments_set():
    readme = (DEPLOY / "README.md").read_text()
    documented = set(re.findall(r"^\| `([A-Z][A-Z0-9_]+)` \|", readme, re.MULTILINE))
    used = set(image_env()) - {"PATH", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE"}
    used |= {name for s in compose()["services"].values() for name in s.get("environment", {}) if not name.startswith("GF_")}
    used |= {e["name"] for e in manifests()["Deployment"]["spec"]["template"]["spec"]["containers"][0]["env"]}
    used |= set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", (DEPLOY / "config" / "routes.yaml").read_text()))
    assert used <= documented, f"undocumented: {sorted(used - documented)}"
    assert "## Operations" in (PROJECT_ROOT / "README.md").read_text()
