"""The deployment files are well-formed and agree with the code.

docker-compose.yml, the Dockerfile, Prometheus (configs, alert and recording rules),
Alertmanager and Grafana (provisioning, dashboards): parsed, cross-checked against the
services' ports and env prefixes (constellation.stack), and every metric name they query
must be one the services define. With promtool / amtool installed (the local stack
installs them) the configs and rules also go through Prometheus' own checks; without,
the structural checks here still run.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests import promql

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
PROMETHEUS = DEPLOY / "prometheus"
ALERTMANAGER = DEPLOY / "alertmanager"
GRAFANA = DEPLOY / "grafana"

sys.path.insert(0, str(GRAFANA))
import generate_dashboards  # noqa: E402

from constellation import stack  # noqa: E402

# The documented port table (README, MISSION "Local defaults").
SERVICE_PORTS = {
    "ingest": 8001,
    "predictor": 8002,
    "drift-detector": 8003,
    "auto-responder": 8004,
    "recommender": 8005,
    "alerter": 8006,
}
ENV_PREFIXES = {spec.name: spec.env_prefix for spec in stack.SERVICES}
INFRASTRUCTURE = {
    "kafka",
    "schema-registry",
    "kafka-ui",
    "mlflow",
    "prometheus",
    "alertmanager",
    "grafana",
    "node-exporter",
    "cadvisor",
}
SEVERITIES = {"critical", "high", "warning", "info"}

PROMTOOL = shutil.which("promtool")
AMTOOL = shutil.which("amtool")


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = load_yaml(COMPOSE)
    return data


def all_yaml_files() -> list[Path]:
    return [
        COMPOSE,
        *sorted(DEPLOY.glob("prometheus/**/*.yml")),
        *sorted(DEPLOY.glob("alertmanager/*.yml")),
    ] + sorted(DEPLOY.glob("grafana/provisioning/**/*.yml"))


# --------------------------------------------------------------------------- well-formed


@pytest.mark.parametrize("path", all_yaml_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_yaml_files_parse(path: Path) -> None:
    assert isinstance(load_yaml(path), dict)


def test_the_service_table_matches_the_local_stack() -> None:
    assert [spec.name for spec in stack.SERVICES] == list(SERVICE_PORTS)
    assert set(ENV_PREFIXES.values()) == {
        "INGEST_",
        "PREDICTOR_",
        "DRIFT_",
        "RESPONDER_",
        "RECOMMENDER_",
        "ALERTER_",
    }


# --------------------------------------------------------------------------- docker-compose


def test_compose_has_the_infrastructure_the_job_and_every_service(compose: dict[str, Any]) -> None:
    services = set(compose["services"])
    missing = (INFRASTRUCTURE | {"provision"} | set(SERVICE_PORTS)) - services
    assert not missing, f"docker-compose.yml lacks {sorted(missing)}"


def test_every_long_running_container_has_a_healthcheck(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        if name == "provision":  # a one-shot job: its exit code counts
            assert service.get("restart") == "no"
            continue
        check = service.get("healthcheck")
        assert check and not check.get("disable"), f"{name} has no healthcheck"
        test = check["test"]
        assert isinstance(test, list) and test[0] in {"CMD", "CMD-SHELL"} and len(test) > 1, name


def test_depends_on_always_waits_for_a_condition(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        depends = service.get("depends_on", {})
        assert isinstance(depends, dict), f"{name}: depends_on must name conditions, not a bare list"
        for dependency, spec in depends.items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            condition = spec.get("condition")
            assert condition in {"service_healthy", "service_completed_successfully"}, (name, dependency)
            if condition == "service_healthy":
                assert services[dependency].get("healthcheck"), (
                    f"{name} waits on {dependency} without healthcheck"
                )
            else:
                assert dependency == "provision"


def test_services_start_after_provisioning_and_their_dependencies(compose: dict[str, Any]) -> None:
    for name in SERVICE_PORTS:
        depends = compose["services"][name]["depends_on"]
        assert depends["provision"]["condition"] == "service_completed_successfully", name
        for dependency in ("kafka", "schema-registry", "mlflow"):
            assert depends[dependency]["condition"] == "service_healthy", (name, dependency)
    provision = compose["services"]["provision"]
    for dependency in ("kafka", "schema-registry", "mlflow"):
        assert provision["depends_on"][dependency]["condition"] == "service_healthy"
    command = " ".join(provision["command"])
    assert "python -m mlops_platform.provision apply" in command
    # Users and ACLs first: nothing else may touch Kafka before they exist.
    assert command.index("python -m constellation acls apply") < command.index("mlops_platform.provision")
    assert "python -m constellation bootstrap-model" in command


@pytest.mark.parametrize("name", list(SERVICE_PORTS))
def test_each_service_is_built_from_the_one_dockerfile_and_configured(
    compose: dict[str, Any], name: str
) -> None:
    service = compose["services"][name]
    port = SERVICE_PORTS[name]
    prefix = ENV_PREFIXES[name]
    assert service["build"]["context"] == "."
    assert service["build"]["dockerfile"] == "deploy/docker/Dockerfile"
    assert service["build"]["args"]["SERVICE"] == name
    env = service["environment"]
    assert env["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:29092"
    assert env["SCHEMA_REGISTRY_URL"] == "http://schema-registry:8081"  # Confluent's root URL
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert env["SCHEMAS_DIR"] == "/app/schemas"
    assert env[f"{prefix}HTTP_HOST"] == "0.0.0.0"
    assert int(env[f"{prefix}HTTP_PORT"]) == port
    assert int(env["HEALTH_PORT"]) == port
    assert f"{port}:{port}" in service["ports"]
    probe = " ".join(service["healthcheck"]["test"])
    assert f"127.0.0.1:{port}/ready" in probe


def test_compose_wires_kafka_ui_and_the_observability_stack(compose: dict[str, Any]) -> None:
    services = compose["services"]
    ui = services["kafka-ui"]["environment"]
    assert ui["KAFKA_CLUSTERS_0_BOOTSTRAPSERVERS"] == "kafka:29092"
    assert ui["KAFKA_CLUSTERS_0_SCHEMAREGISTRY"] == "http://schema-registry:8081"
    kafka = services["kafka"]["environment"]
    assert kafka["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, no ZooKeeper
    # One node by default (the three-brokers profile sets these variables; test_compose_security).
    assert kafka["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == "${KAFKA_REPLICATION_FACTOR:-1}"
    assert kafka["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"] == "${KAFKA_MIN_INSYNC_REPLICAS:-1}"
    assert services["schema-registry"]["image"].startswith("confluentinc/cp-schema-registry:")
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"
    grafana_mounts = dict(v.split(":")[:2] for v in services["grafana"]["volumes"] if v.startswith("./"))
    provider = load_yaml(GRAFANA / "provisioning" / "dashboards" / "mlops.yml")["providers"][0]
    assert grafana_mounts["./deploy/grafana/dashboards"] == provider["options"]["path"]
    assert grafana_mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"


def _locked_version(package: str) -> str:
    text = (ROOT / "uv.lock").read_text()
    match = re.search(rf'\[\[package\]\]\nname = "{re.escape(package)}"\nversion = "([^"]+)"', text)
    assert match, package
    return match.group(1)


def test_image_versions_follow_the_local_stack(compose: dict[str, Any]) -> None:
    mlflow_image = compose["services"]["mlflow"]["image"]
    assert mlflow_image.endswith(f":v{_locked_version('mlflow')}"), "MLflow server and clients must match"
    pom = (DEPLOY / "kafka" / "pom.xml").read_text()
    kafka_version = re.search(r"<kafka.version>([^<]+)</kafka.version>", pom)
    assert kafka_version
    assert compose["services"]["kafka"]["image"] == f"apache/kafka:{kafka_version.group(1)}"


def test_dockerfile_pattern() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^ARG SERVICE", text, re.M)
    assert "python:3.11-slim" in text
    assert "uv sync --frozen --no-dev" in text and '--package "${SERVICE}"' in text
    user = re.findall(r"^USER (\S+)", text, re.M)
    assert user and user[-1] not in {"root", "0"}
    healthcheck = re.search(r"^HEALTHCHECK .*(?:\n\s+.*)*", text, re.M)
    assert healthcheck and "/health" in healthcheck.group(0)
    ignore = (DEPLOY / "docker" / "Dockerfile.dockerignore").read_text()
    for needed in ("!uv.lock", "!libs/**", "!services/**", "!schemas/**", "!scripts/src/**"):
        assert needed in ignore


# --------------------------------------------------------------------------- prometheus


def _scrape_targets(config: dict[str, Any]) -> dict[str, list[str]]:
    return {
        job["job_name"]: [t for static in job.get("static_configs", []) for t in static["targets"]]
        for job in config["scrape_configs"]
    }


def test_compose_prometheus_scrapes_every_service_by_its_compose_name() -> None:
    config = load_yaml(PROMETHEUS / "prometheus.yml")
    targets = _scrape_targets(config)
    for name, port in SERVICE_PORTS.items():
        assert targets[name] == [f"{name}:{port}"]
    # Host and container figures for the System dashboard, by their compose names.
    assert targets["node-exporter"] == ["node-exporter:9100"]
    assert targets["cadvisor"] == ["cadvisor:8080"]
    assert config["rule_files"] == ["rules/*.yml"]
    assert config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["alertmanager:9093"]


def test_local_prometheus_scrapes_every_service_on_loopback() -> None:
    config = load_yaml(PROMETHEUS / "prometheus.local.yml")
    targets = _scrape_targets(config)
    for name, port in SERVICE_PORTS.items():
        assert targets[name] == [f"127.0.0.1:{port}"]
    assert targets["node-exporter"] == ["127.0.0.1:9100"]
    assert config["rule_files"] == ["rules/*.yml"]
    alertmanager = config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert alertmanager == ["127.0.0.1:9193"]  # 9093 is the Kafka controller's


@pytest.mark.parametrize("path", [PROMETHEUS / "prometheus.yml", PROMETHEUS / "prometheus.local.yml"])
def test_no_target_label_shadows_a_metric_label(path: Path) -> None:
    # The services' metrics carry `service` (and mlops_service_info `instance`): a target label
    # of the same name would rename theirs to exported_*.
    for job in load_yaml(path)["scrape_configs"]:
        for static in job.get("static_configs", []):
            assert "service" not in static.get("labels", {}), job["job_name"]
            assert static.get("labels", {}).get("tier") in {"service", "infra"}
        if job["job_name"] in SERVICE_PORTS:
            assert job["static_configs"][0]["labels"]["tier"] == "service"


def test_rules_are_structurally_sound() -> None:
    seen_alerts: set[str] = set()
    for path in promql.rule_files():
        groups = load_yaml(path)["groups"]
        assert groups, path
        for group in groups:
            assert group["name"] and group["rules"]
            for rule in group["rules"]:
                assert bool("alert" in rule) != bool("record" in rule), rule
                assert isinstance(rule["expr"], str) and rule["expr"].strip()
                if "alert" in rule:
                    assert rule["alert"] not in seen_alerts, f"duplicate alert {rule['alert']}"
                    seen_alerts.add(rule["alert"])
                    assert rule["labels"]["severity"] in SEVERITIES, rule["alert"]
                    assert rule["annotations"]["summary"] and rule["annotations"]["description"]
                    if "for" in rule:
                        assert re.fullmatch(r"\d+[smh]", rule["for"]), rule["alert"]
                else:
                    assert re.fullmatch(r"[a-z_]+:[a-z0-9_]+:[a-z0-9_]+", rule["record"]), rule["record"]


def test_the_alerts_the_issue_asks_for_exist() -> None:
    alerts = {rule["alert"]: rule for _path, rule in promql.rules() if "alert" in rule}
    expected = {
        "PredictionLatencyP99High": "fds:latency_seconds:p99_5m > 0.2",
        "PredictionErrorRateHigh": "fds:error_ratio:rate5m > 0.01",
        "FraudBlockRateHigh": "fds:block_ratio:rate5m > 0.05",
        "ConsumerLagGrowing": "deriv(service_group:mlops_consumer_lag_messages:sum[10m]) > 0",
        "DataDriftDetected": "drift_state",
        "AlertDeliveryFailures": "alerter_delivery_failures_total",
        "ServiceDown": "== 0",
        "DependencyDown": "mlops_dependency_up",
        "HostCpuHigh": "node_cpu_busy",
        "HostMemoryHigh": "node_memory_used",
        "HostDiskAlmostFull": "node_filesystem_used",
        "ServiceMemoryGrowing": "process_resident_memory_bytes",
        "ServiceAvailabilityBelowTarget": "service_availability_ratio",
    }
    for name, fragment in expected.items():
        assert name in alerts, name
        assert fragment in alerts[name]["expr"], name
    # The auto-responder scales the predictor on alerts named *Latency* (its rules.yaml):
    # only the predictor's latency alert may carry that word.
    assert [name for name in alerts if "Latency" in name] == ["PredictionLatencyP99High"]


def test_promql_helpers() -> None:
    assert (
        promql.without_thresholds('x{a!="b",c=~"d"} > 0.2 and y == 0')
        == 'x{a!="b",c=~"d"} > bool 0.2 and y == bool 0'
    )
    assert promql.without_thresholds("x > bool 1") == "x > bool 1"
    names = promql.metric_names(
        'sum by (le) (rate(fds_latency_seconds_bucket{endpoint="stream"}[5m])) / on (x) group_left (y) '
        'label_replace(up, "a", "$1", "b", "(.*)") or vector(0) > bool service:x:rate5m offset 5m'
    )
    assert names == {"fds_latency_seconds_bucket", "up", "service:x:rate5m"}
    assert promql.candidate_definitions("a_total_bucket") == ["a_total_bucket", "a_total", "a"]


def _prometheus_expressions() -> list[promql.Query]:
    return promql.dashboard_queries() + promql.rule_queries()


def test_every_metric_queried_is_exported_by_the_code() -> None:
    sources = promql.source_texts()
    recorded = promql.recorded_names()
    unknown: dict[str, list[str]] = {}
    for query in _prometheus_expressions():
        for name in promql.metric_names(query.expr):
            if name in recorded or name in promql.BUILTIN_SERIES or promql.external(name):
                continue
            if ":" in name or not promql.defined(name, sources):
                unknown.setdefault(name, []).append(query.origin)
    assert not unknown, "metrics no service defines:\n" + "\n".join(
        f"  {name}: {', '.join(origins)}" for name, origins in sorted(unknown.items())
    )


def _tool(path: Path | None, name: str) -> Path:
    """The path of a checker that `make stack-up` installs; fail loudly when it is missing."""
    if path is None:
        pytest.fail(f"{name} is not installed: `make stack-up` installs it from Debian's packages (as root)")
    return path


def _promtool() -> str:
    return str(_tool(PROMTOOL, "promtool"))


def _amtool() -> str:
    return str(_tool(AMTOOL, "amtool"))


def test_recording_rules_are_used_and_defined_before_use() -> None:
    recorded = promql.recorded_names()
    used = {
        name for q in _prometheus_expressions() if q.kind != "record" for name in promql.metric_names(q.expr)
    }
    assert recorded <= used, f"recorded but never used: {sorted(recorded - used)}"


@pytest.mark.parametrize("config", ["prometheus.yml", "prometheus.local.yml"])
def test_promtool_check_config(config: str) -> None:
    result = subprocess.run(
        [_promtool(), "check", "config", config],
        cwd=PROMETHEUS,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_check_rules() -> None:
    files = [str(p) for p in promql.rule_files()]
    result = subprocess.run([_promtool(), "check", "rules", *files], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    # promtool parses rule expressions: each dashboard query becomes a recording rule.
    queries = promql.dashboard_queries()
    rules = [{"record": f"dashboard:query:{i}", "expr": q.expr} for i, q in enumerate(queries)]
    path = tmp_path / "dashboards.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    result = subprocess.run([_promtool(), "check", "rules", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_rendered_local_config_is_valid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stack, "PROMETHEUS_HOME", tmp_path / "prometheus")
    monkeypatch.setattr(stack, "SCRAPE_TARGETS", tmp_path / "prometheus" / "targets")
    rendered = stack.render_prometheus_config()
    config = load_yaml(rendered)
    for job in config["scrape_configs"]:
        if job["job_name"] in SERVICE_PORTS:
            [target_file] = job["file_sd_configs"][0]["files"]
            assert Path(target_file).parent == tmp_path / "prometheus" / "targets"
    assert config["rule_files"] == [str(PROMETHEUS / "rules" / "*.yml")]
    spec = stack.SERVICE_BY_NAME["predictor"]
    stack.set_scrape_target(spec, 1, present=True)
    stack.set_scrape_target(spec, 2, present=True)
    assert stack.scrape_targets(spec) == [f"{stack.HOST}:{spec.port}", f"{stack.HOST}:{spec.port + 100}"]
    stack.set_scrape_target(spec, 2, present=False)
    groups = json.loads((tmp_path / "prometheus" / "targets" / "predictor.json").read_text())
    assert groups == [{"targets": [f"{stack.HOST}:{spec.port}"], "labels": {"tier": "service"}}]
    result = subprocess.run([_promtool(), "check", "config", str(rendered)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_rendered_local_config_scrapes_the_node_exporter_only_when_installed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stack, "PROMETHEUS_HOME", tmp_path / "prometheus")
    monkeypatch.setattr(stack, "SCRAPE_TARGETS", tmp_path / "prometheus" / "targets")
    monkeypatch.setitem(stack.PORTS, "node-exporter", 19100)
    monkeypatch.setattr(stack, "node_exporter_binary", lambda: "/usr/bin/prometheus-node-exporter")
    targets = _scrape_targets(load_yaml(stack.render_prometheus_config()))
    assert targets["node-exporter"] == [f"{stack.HOST}:19100"]
    monkeypatch.setattr(stack, "node_exporter_binary", lambda: None)
    assert "node-exporter" not in _scrape_targets(load_yaml(stack.render_prometheus_config()))


# --------------------------------------------------------------------------- alertmanager


@pytest.mark.parametrize(
    ("name", "url"),
    [
        ("alertmanager.yml", "http://alerter:8006/alertmanager"),
        ("alertmanager.local.yml", "http://127.0.0.1:8006/alertmanager"),
    ],
)
def test_alertmanager_routes_everything_to_the_alerter(name: str, url: str) -> None:
    config = load_yaml(ALERTMANAGER / name)
    receivers = {r["name"]: r for r in config["receivers"]}
    assert config["route"]["receiver"] in receivers
    for route in config["route"].get("routes", []):
        assert route["receiver"] in receivers
    webhooks = [w for r in receivers.values() for w in r.get("webhook_configs", [])]
    assert webhooks and all(w["url"] == url and w["send_resolved"] for w in webhooks)


def test_the_rendered_alertmanager_config_follows_the_alerter_port(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stack, "ALERTMANAGER_HOME", tmp_path)
    config = load_yaml(stack.render_alertmanager_config())
    [webhook] = config["receivers"][0]["webhook_configs"]
    assert webhook["url"] == f"http://{stack.HOST}:{stack.SERVICE_BY_NAME['alerter'].port}/alertmanager"


def test_amtool_check_config() -> None:
    files = [str(ALERTMANAGER / "alertmanager.yml"), str(ALERTMANAGER / "alertmanager.local.yml")]
    result = subprocess.run([_amtool(), "check-config", *files], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


# --------------------------------------------------------------------------- grafana


def test_grafana_datasource_is_the_one_the_dashboards_use() -> None:
    provisioning = load_yaml(GRAFANA / "provisioning" / "datasources" / "prometheus.yml")
    [prometheus] = [d for d in provisioning["datasources"] if d["type"] == "prometheus"]
    assert prometheus["uid"] == generate_dashboards.DATASOURCE["uid"]
    assert prometheus["url"] == "http://prometheus:9090"


def test_dashboards_are_generated_from_the_description() -> None:
    files = {p.name: p.read_text() for p in (GRAFANA / "dashboards").glob("*.json")}
    assert files == generate_dashboards.render(), "run python deploy/grafana/generate_dashboards.py"


@pytest.mark.parametrize("path", sorted((GRAFANA / "dashboards").glob("*.json")), ids=lambda p: p.name)
def test_dashboard_is_well_formed_and_every_panel_has_a_query(path: Path) -> None:
    dashboard = json.loads(path.read_text())
    assert dashboard["uid"] and dashboard["title"]
    panels = dashboard["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels:
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "prometheus"}, panel["title"]
        assert panel["targets"], f"{panel['title']} has no query"
        for target in panel["targets"]:
            assert target["expr"].strip(), f"{panel['title']} / {target['refId']} is empty"
            assert target["datasource"]["uid"] == "prometheus"


def test_the_dashboards_cover_what_the_issue_lists() -> None:
    titles = {json.loads(p.read_text())["uid"] for p in (GRAFANA / "dashboards").glob("*.json")}
    assert titles == {
        "mlops-overview",
        "mlops-fraud-scoring",
        "mlops-drift-quality",
        "mlops-auto-responder",
        "mlops-recommender",
        "mlops-kafka-lag",
        "mlops-system",
    }
    fraud = (GRAFANA / "dashboards" / "fraud-scoring.json").read_text()
    for needle in (
        "histogram_quantile(0.99",
        '"heatmap"',
        "risk_level",
        "fds_fraud_probability_bucket",
        "arm",
    ):
        assert needle in fraud, needle
    drift = (GRAFANA / "dashboards" / "drift-quality.json").read_text()
    for needle in ("drift_feature_psi", "drift_live_auc", "drift_live_recall", "model_version"):
        assert needle in drift, needle
    system = (GRAFANA / "dashboards" / "system.json").read_text()
    for needle in (
        "service_availability_ratio",
        "node_cpu_seconds_total",
        "node_memory_used",
        "node_filesystem_used",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
    ):
        assert needle in system, needle


def test_the_process_collector_series_the_rules_use_are_exported() -> None:
    # prometheus-client registers its process collector in the default registry, which every
    # service's /metrics serves (mlops_platform.http).
    from prometheus_client import REGISTRY, generate_latest

    exposed = generate_latest(REGISTRY).decode()
    used = {name for q in _prometheus_expressions() for name in promql.metric_names(q.expr)}
    for name in promql.PROCESS_COLLECTOR_SERIES & used:
        assert f"\n{name} " in exposed, name
