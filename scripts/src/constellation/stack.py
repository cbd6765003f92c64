"""Local constellation without Docker: install, start, stop and inspect every process.

    python -m constellation stack up [--infra]        start Kafka, schema registry, MLflow
                                                      (+ provisioning), Prometheus and Alertmanager
                                                      (when installed), then the services unless --infra
    python -m constellation stack down [--services]   stop the services (and the infrastructure
                                                      unless --services)
    python -m constellation stack status [--json]     what runs, where, and whether it is healthy
    python -m constellation stack scale NAME N        run N instances of a service (one consumer group)
    python -m constellation stack restart NAME        stop and start one component
    python -m constellation stack provision           create missing topics, register schemas

Everything lives under ``.stack/`` (git-ignored): binaries, data, logs and pid files.
Prometheus, Alertmanager and the node exporter come from Debian's packages (``prometheus``,
``prometheus-alertmanager``, ``prometheus-node-exporter``), installed on first use when running
as root; without them the stack runs unobserved (a warning says so; without the node
exporter only the host figures lack, ``stack status`` says so), and ``STACK_OBSERVABILITY=0``
skips them.
Every command is idempotent: starting what already runs healthy does nothing, and a
stale pid file is cleaned up. Ports and hosts come from the environment (see PORTS).

The services are the service catalogue's (``schemas/services.yaml``), started in its order
as ``python -m <module>`` on its ports; ``<PREFIX>HTTP_PORT`` moves a service's first
instance, and extra instances listen 100 ports above the one before.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import shutil
import signal
import socket
import string
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from constellation import ROOT, acls, api_keys, credentials
from constellation.processes import http_json, http_ok, http_post, launch, port_open, tail, wait_until
from mlops_platform.service_catalogue import ServiceSpec, load_services
from mlops_platform.settings import PlatformSettings

STATE = Path(os.environ.get("STACK_DIR", ROOT / ".stack"))
RUN, LOGS = STATE / "run", STATE / "logs"
PYTHON = sys.executable
HOST = os.environ.get("STACK_HOST", "127.0.0.1")


def _port(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


PORTS = {
    "kafka": _port("KAFKA_PORT", 9092),
    "kafka-controller": _port("KAFKA_CONTROLLER_PORT", 9093),
    "schema-registry": _port("SCHEMA_REGISTRY_PORT", 8081),
    "mlflow": _port("MLFLOW_PORT", 5000),
    "prometheus": _port("PROMETHEUS_PORT", 9090),
    "alertmanager": _port("ALERTMANAGER_PORT", 9093 + 100),
}
KAFKA_BOOTSTRAP = f"{HOST}:{PORTS['kafka']}"
REGISTRY_URL = f"http://{HOST}:{PORTS['schema-registry']}/apis/ccompat/v7"
MLFLOW_URL = f"http://{HOST}:{PORTS['mlflow']}"


def catalogue_services(schemas_dir: Path | None = None) -> list[ServiceSpec]:
    """The service catalogue's services, each on the port its ``<PREFIX>HTTP_PORT`` asks for."""
    catalogue = load_services(schemas_dir or PlatformSettings().schemas_dir)
    return [
        dataclasses.replace(spec, port=_port(f"{spec.env_prefix}HTTP_PORT", spec.port)) for spec in catalogue
    ]


SERVICES = catalogue_services()
SERVICE_BY_NAME = {s.name: s for s in SERVICES}
# The auto-responder scales a service by running this command (its RESPONDER_SCALE_COMMAND).
SCALE_COMMAND = [PYTHON, "-m", "constellation", "stack", "scale", "{service}", "{instances}"]


def instance_port(spec: ServiceSpec, number: int) -> int:
    """HTTP port of instance ``number`` of a service (the stack counts instances from 1)."""
    return spec.instance_port(number - 1)


class StackError(RuntimeError):
    """A component failed to install or start; the message says which and where its log is."""


def stack_credentials() -> credentials.StackCredentials:
    """The stack's passwords (generated on first use into .stack/credentials.json, 0600)."""
    return credentials.ensure([spec.name for spec in SERVICES], credentials.credentials_path(STATE))


KAFKA_HOME = STATE / "kafka"
KAFKA_DATA = KAFKA_HOME / "data"
# Written when the storage is formatted with the admin's SCRAM credentials.
SCRAM_MARKER = KAFKA_DATA / ".scram-users"


def kafka_secured() -> bool:
    """Whether this stack's Kafka runs with SASL/SCRAM and ACLs (always, once formatted by this stack).

    A data folder formatted by an older stack (no SCRAM users) keeps running PLAINTEXT, without
    credentials, until it is removed: ``make stack-down && rm -rf .stack/kafka/data && make stack-up``.
    """
    return SCRAM_MARKER.exists() or not (KAFKA_DATA / "meta.properties").exists()


def platform_env() -> dict[str, str]:
    """Connection settings every process of the stack gets: admin on Kafka, the registry writer.

    Services do not keep these: :func:`start_service` gives each its own principal.
    """
    env = dict(os.environ)
    env.setdefault("KAFKA_BOOTSTRAP_SERVERS", KAFKA_BOOTSTRAP)
    env.setdefault("SCHEMA_REGISTRY_URL", REGISTRY_URL)
    env.setdefault("MLFLOW_TRACKING_URI", MLFLOW_URL)
    env.setdefault("SCHEMAS_DIR", str(ROOT / "schemas"))
    env.setdefault("STACK_DIR", str(STATE))
    if kafka_secured():
        credentials.export_operator_env(env, credentials.credentials_path(STATE))
    return env


def admin_settings() -> PlatformSettings:
    """Settings of an admin client of this stack's Kafka (provisioning, ACLs, probes)."""
    env = platform_env()
    return PlatformSettings(
        kafka_bootstrap_servers=env["KAFKA_BOOTSTRAP_SERVERS"],
        kafka_security_protocol=env.get("KAFKA_SECURITY_PROTOCOL", "PLAINTEXT"),
        kafka_sasl_mechanism=env.get("KAFKA_SASL_MECHANISM", credentials.SASL_MECHANISM),
        kafka_sasl_username=env.get("KAFKA_SASL_USERNAME"),
        kafka_sasl_password=env.get("KAFKA_SASL_PASSWORD"),
    )


# --------------------------------------------------------------------------- processes


def _pid_file(name: str) -> Path:
    return RUN / f"{name}.pid"


def _log_file(name: str) -> Path:
    return LOGS / f"{name}.log"


def running_pid(name: str) -> int | None:
    path = _pid_file(name)
    if not path.exists():
        return None
    try:
        pid = int(path.read_text().strip())
        os.kill(pid, 0)
    except (ValueError, ProcessLookupError, PermissionError):
        path.unlink(missing_ok=True)
        return None
    # A zombie child still answers kill(0); treat it as gone.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
        if state == "Z":
            path.unlink(missing_ok=True)
            return None
    except OSError:
        pass
    return pid


def spawn(name: str, argv: list[str], env: dict[str, str], cwd: Path = ROOT) -> int:
    """Start a detached process (own session) logging to .stack/logs/NAME.log."""
    RUN.mkdir(parents=True, exist_ok=True)
    proc = launch(argv, env, _log_file(name), cwd=cwd, detach=True)
    _pid_file(name).write_text(str(proc.pid))
    return proc.pid


def stop(name: str, timeout_s: float = 30.0) -> bool:
    """SIGTERM the process group, wait for a graceful exit, SIGKILL as a last resort."""
    pid = running_pid(name)
    if pid is None:
        return False
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and running_pid(name) is not None:
        time.sleep(0.2)
    if running_pid(name) is not None:
        print(f"  {name}: did not stop within {timeout_s:.0f}s, killing")
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        time.sleep(0.5)
    _pid_file(name).unlink(missing_ok=True)
    return True


def wait_for(name: str, ready: Callable[[], bool], timeout_s: float) -> None:
    """Wait until ``ready``; a process that exits or stays unhealthy raises with its log's tail."""
    outcome = wait_until(ready, lambda: running_pid(name) is not None, timeout_s)
    if outcome != "ready":
        what = "exited during start-up" if outcome == "exited" else f"not healthy after {timeout_s:.0f}s"
        log = _log_file(name)
        raise StackError(f"{name} {what}; see its log: {log}\n{tail(log)}")


# --------------------------------------------------------------------------- kafka


def install_kafka() -> Path:
    """Resolve the broker's jars from Maven Central (once per pom content)."""
    pom = ROOT / "deploy" / "kafka" / "pom.xml"
    libs = KAFKA_HOME / "libs"
    stamp = KAFKA_HOME / "libs.sha256"
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()
    if libs.is_dir() and stamp.exists() and stamp.read_text() == digest:
        return libs
    if shutil.which("mvn") is None:
        raise StackError(
            "Maven (mvn) is required to fetch Apache Kafka's jars; install it (apt-get install maven)"
        )
    print("  kafka: resolving Apache Kafka jars from Maven Central (first run only)...")
    shutil.rmtree(libs, ignore_errors=True)
    LOGS.mkdir(parents=True, exist_ok=True)
    with _log_file("kafka-install").open("w") as log:
        result = subprocess.run(  # noqa: S603
            [
                "mvn",
                "-B",
                "-q",
                "-s",
                str(ROOT / "deploy" / "maven-settings.xml"),
                "-f",
                str(pom),
                "dependency:copy-dependencies",
                f"-DoutputDirectory={libs}",
                "-DincludeScope=runtime",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            check=False,
        )
    if result.returncode != 0:
        raise StackError(f"kafka: Maven could not resolve the jars; see {_log_file('kafka-install')}")
    stamp.write_text(digest)
    return libs


def _java() -> str:
    java = shutil.which("java")
    if java is None:
        raise StackError(
            "Java 17+ is required for Kafka; install it (apt-get install openjdk-17-jre-headless)"
        )
    return java


def start_kafka() -> None:
    if _kafka_ready():
        security = "SASL/SCRAM, ACLs" if kafka_secured() else "PLAINTEXT, formatted by an older stack"
        print(f"  kafka: running on {KAFKA_BOOTSTRAP} ({security})")
        return
    libs = install_kafka()
    data = KAFKA_DATA
    secured = kafka_secured()
    admin_password = stack_credentials().admin_password if secured else ""
    config = KAFKA_HOME / "server.properties"
    parts = ["server.properties.template", *(["security.properties.template"] if secured else [])]
    template = string.Template("\n".join((ROOT / "deploy" / "kafka" / part).read_text() for part in parts))
    config.touch(mode=0o600)
    config.chmod(0o600)
    config.write_text(
        template.substitute(
            host=HOST,
            port=PORTS["kafka"],
            controller_port=PORTS["kafka-controller"],
            data_dir=data,
            protocol="SASL_PLAINTEXT" if secured else "PLAINTEXT",
            admin_password=admin_password,
        )
    )
    if not secured:
        print(f"  WARNING: {data} was formatted by an older stack: Kafka runs PLAINTEXT, without ACLs")
    classpath = f"{libs}/*"
    log_props = [
        f"-Dlog4j2.configurationFile={ROOT / 'deploy' / 'kafka' / 'log4j2.properties'}",
        f"-Dkafka.logs.dir={LOGS / 'kafka'}",
    ]
    (LOGS / "kafka").mkdir(parents=True, exist_ok=True)
    if not (data / "meta.properties").exists():
        data.mkdir(parents=True, exist_ok=True)
        cluster_id = (
            subprocess.run(  # noqa: S603
                [_java(), *log_props, "-cp", classpath, "kafka.tools.StorageTool", "random-uuid"],
                capture_output=True,
                text=True,
                check=True,
            )
            .stdout.strip()
            .splitlines()[-1]
        )
        formatted = subprocess.run(  # noqa: S603
            [
                _java(),
                *log_props,
                "-cp",
                classpath,
                "kafka.tools.StorageTool",
                "format",
                "-t",
                cluster_id,
                "-c",
                str(config),
                "--ignore-formatted",
                # The broker's own identity must exist before it starts: it authenticates
                # inter-broker connections as admin. Services' users come later (secure_kafka).
                "--add-scram",
                f"SCRAM-SHA-512=[name={credentials.ADMIN},password={admin_password}]",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if formatted.returncode != 0:
            raise StackError(
                f"kafka: formatting the KRaft storage failed:\n{formatted.stdout}{formatted.stderr}"
            )
        SCRAM_MARKER.write_text("SCRAM-SHA-512 admin added at format time\n")
    heap = os.environ.get("KAFKA_HEAP_OPTS", "-Xms256m -Xmx1g")
    spawn(
        "kafka",
        [
            _java(),
            *heap.split(),
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            *log_props,
            "-cp",
            classpath,
            "kafka.Kafka",
            str(config),
        ],
        platform_env(),
    )
    wait_for("kafka", _kafka_ready, 180)
    print(f"  kafka: started on {KAFKA_BOOTSTRAP} (logs {LOGS / 'kafka'})")


def _kafka_ready() -> bool:
    if not port_open(PORTS["kafka"], HOST):
        return False
    try:
        acls.admin_client(admin_settings()).list_topics(timeout=2)
    except Exception:
        return False
    return True


def secure_kafka() -> None:
    """Each catalogue service's SCRAM user and the ACLs the catalogue implies (idempotent)."""
    if not kafka_secured():
        print(
            "  WARNING: kafka runs PLAINTEXT (data formatted by an older stack): no per-service principals "
            "or ACLs; `make stack-down && rm -rf .stack/kafka/data && make stack-up` switches to SASL"
        )
        return
    summary = acls.provision_security(admin_settings(), SERVICES, stack_credentials().kafka)
    print(f"  kafka: {summary} (python -m constellation acls show)")


# --------------------------------------------------------------------------- registry + mlflow


def start_registry() -> None:
    url = f"http://{HOST}:{PORTS['schema-registry']}/ready"
    if http_ok(url):
        print(f"  schema-registry: running on {REGISTRY_URL}")
        return
    env = platform_env()
    env.update(SCHEMA_REGISTRY_HOST=HOST, SCHEMA_REGISTRY_PORT=str(PORTS["schema-registry"]))
    # Writes (register, delete, config) need these credentials; reads stay open.
    if kafka_secured():
        env.update(
            SCHEMA_REGISTRY_AUTH_USERNAME=credentials.REGISTRY_WRITER,
            SCHEMA_REGISTRY_AUTH_PASSWORD=stack_credentials().registry_password,
        )
    spawn("schema-registry", [PYTHON, "-m", "schema_registry_server"], env)
    wait_for("schema-registry", lambda: http_ok(url), 180)
    print(f"  schema-registry: started on {REGISTRY_URL}")


def start_mlflow() -> None:
    url = f"{MLFLOW_URL}/health"
    if http_ok(url):
        print(f"  mlflow: running on {MLFLOW_URL}")
        return
    home = STATE / "mlflow"
    (home / "artifacts").mkdir(parents=True, exist_ok=True)
    mlflow = str(Path(PYTHON).parent / "mlflow")
    env = platform_env()
    # The server must not think it is its own client: drop a tracking URI inherited from the env.
    env.pop("MLFLOW_TRACKING_URI", None)
    spawn(
        "mlflow",
        [
            mlflow,
            "server",
            "--host",
            HOST,
            "--port",
            str(PORTS["mlflow"]),
            "--backend-store-uri",
            f"sqlite:///{home / 'mlflow.db'}",
            "--artifacts-destination",
            str(home / "artifacts"),
            "--serve-artifacts",
            "--workers",
            "2",
        ],
        env,
    )
    wait_for("mlflow", lambda: http_ok(url), 300)
    print(f"  mlflow: started on {MLFLOW_URL}")


def provision() -> None:
    result = subprocess.run(  # noqa: S603
        [PYTHON, "-m", "mlops_platform.provision", "apply"],
        env=platform_env(),
        check=False,
    )
    if result.returncode != 0:
        raise StackError("provisioning topics and schemas failed (output above)")


# --------------------------------------------------------------------------- prometheus + alertmanager


PROMETHEUS_HOME = STATE / "prometheus"
ALERTMANAGER_HOME = STATE / "alertmanager"
SCRAPE_TARGETS = PROMETHEUS_HOME / "targets"
PROMETHEUS_URL = f"http://{HOST}:{PORTS['prometheus']}"
ALERTMANAGER_URL = f"http://{HOST}:{PORTS['alertmanager']}"
PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.local.yml"
PROMETHEUS_RULES = ROOT / "deploy" / "prometheus" / "rules"
ALERTMANAGER_CONFIG = ROOT / "deploy" / "alertmanager" / "alertmanager.local.yml"
# The node exporter's port (host CPU, memory, disk, load for the System dashboard), beside
# the other observers' in PORTS.
PORTS["node-exporter"] = _port("NODE_EXPORTER_PORT", 9100)
NODE_EXPORTER_URL = f"http://{HOST}:{PORTS['node-exporter']}"
# Debian package -> the binaries it ships (Debian renames Alertmanager's binary).
OBSERVABILITY_PACKAGES = {
    "prometheus": ("prometheus",),
    "prometheus-alertmanager": ("prometheus-alertmanager", "alertmanager"),
    "prometheus-node-exporter": ("prometheus-node-exporter", "node_exporter"),
}
NODE_EXPORTER_MISSING = "not installed (apt-get install prometheus-node-exporter): no host metrics"
# Jobs of prometheus.local.yml that scrape infrastructure, and the PORTS entry of each.
_INFRA_JOBS = {name: name for name in ("prometheus", "alertmanager", "schema-registry", "node-exporter")}


def observability_enabled() -> bool:
    return os.environ.get("STACK_OBSERVABILITY", "1").strip().lower() not in {"0", "false", "no", "off"}


def _which(*names: str) -> str | None:
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    return None


def prometheus_binary() -> str | None:
    return _which(*OBSERVABILITY_PACKAGES["prometheus"])


def alertmanager_binary() -> str | None:
    return _which(*OBSERVABILITY_PACKAGES["prometheus-alertmanager"])


def node_exporter_binary() -> str | None:
    return _which(*OBSERVABILITY_PACKAGES["prometheus-node-exporter"])


def install_observability() -> bool:
    """Install Debian's Prometheus, Alertmanager and node exporter when missing; True when
    Prometheus and Alertmanager are there (without the node exporter only host figures lack).

    Only as root with apt-get; otherwise (or when apt fails) a warning says how to install
    them and the stack goes on without: they are optional locally.
    """
    missing = [pkg for pkg, binaries in OBSERVABILITY_PACKAGES.items() if _which(*binaries) is None]
    if not missing:
        return True
    hint = f"install them with `sudo apt-get install {' '.join(OBSERVABILITY_PACKAGES)}`"
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        why = "no apt-get" if shutil.which("apt-get") is None else "not root"
        print(f"  WARNING: {', '.join(missing)} not installed ({why}): running without metrics; {hint}")
        return False
    print(f"  observability: installing {' '.join(missing)} from Debian's packages (first run only)...")
    LOGS.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    with _log_file("observability-install").open("w") as log:
        for argv in (
            ["apt-get", "update", "-qq"],
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
        ):
            result = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, env=env, check=False)
            if result.returncode != 0:
                print(
                    f"  WARNING: `{' '.join(argv)}` failed (see {_log_file('observability-install')}): "
                    f"running without metrics; {hint}"
                )
                return False
    _disable_system_units(missing)
    return prometheus_binary() is not None and alertmanager_binary() is not None


def _disable_system_units(packages: list[str]) -> None:
    """Stop the system-wide instances Debian's packages start under systemd.

    They would hold the ports the stack uses (Prometheus 9090, Alertmanager 9093 which is
    also the Kafka controller's); the stack runs its own instances with its own data.
    """
    if not Path("/run/systemd/system").is_dir() or shutil.which("systemctl") is None:
        return
    units = [f"{pkg}.service" for pkg in packages]
    subprocess.run(["systemctl", "disable", "--now", *units], capture_output=True, check=False)
    print(f"  observability: disabled the system units {', '.join(units)} (the stack runs its own)")


def _scrape_labels(job_name: str) -> dict[str, str]:
    """Target labels of a job in prometheus.local.yml (e.g. ``tier: service``)."""
    import yaml

    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    for job in config.get("scrape_configs", []):
        if job.get("job_name") == job_name:
            labels: dict[str, str] = {}
            for static in job.get("static_configs", []):
                labels.update({str(k): str(v) for k, v in (static.get("labels") or {}).items()})
            return labels
    return {}


def _targets_file(spec: ServiceSpec) -> Path:
    return SCRAPE_TARGETS / f"{spec.name}.json"


def scrape_targets(spec: ServiceSpec) -> list[str]:
    """The instances of a service Prometheus scrapes (``host:port``)."""
    try:
        groups = json.loads(_targets_file(spec).read_text())
    except (OSError, ValueError):
        return []
    return [str(target) for group in groups for target in group.get("targets", [])]


def set_scrape_target(spec: ServiceSpec, index: int, present: bool) -> None:
    """Add (an instance started) or remove (stopped on purpose) one instance from the scrape.

    An instance stays listed while it is expected to run, so a crash shows as ``up == 0``
    (the ServiceDown alert) instead of the target silently disappearing. Prometheus
    watches the file (file_sd), no reload needed.
    """
    target = f"{HOST}:{instance_port(spec, index)}"
    current = scrape_targets(spec)
    if present and target in current:
        return
    targets = sorted({*current, target}) if present else [t for t in current if t != target]
    groups = [{"targets": targets, "labels": _scrape_labels(spec.name)}] if targets else []
    _write_atomic(_targets_file(spec), json.dumps(groups, indent=2) + "\n")


def clear_scrape_targets() -> None:
    for spec in SERVICES:
        if _targets_file(spec).exists():
            _write_atomic(_targets_file(spec), "[]\n")


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def render_prometheus_config() -> Path:
    """deploy/prometheus/prometheus.local.yml with this stack's ports, rules and target files."""
    import yaml

    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    # Absolute: the rendered file lives under .stack/, the rules stay in the repository.
    config["rule_files"] = [str(PROMETHEUS_RULES / "*.yml")]
    for alertmanagers in config.get("alerting", {}).get("alertmanagers", []):
        for static in alertmanagers.get("static_configs", []):
            static["targets"] = [f"{HOST}:{PORTS['alertmanager']}"]
    if node_exporter_binary() is None:
        # Not installed: a job that can never be scraped would only fire InfrastructureTargetDown.
        config["scrape_configs"] = [
            job for job in config.get("scrape_configs", []) if job["job_name"] != "node-exporter"
        ]
    for job in config.get("scrape_configs", []):
        name = job["job_name"]
        if name in SERVICE_BY_NAME:
            # Instances come and go (scale, restart): read them from a file the stack maintains.
            job.pop("static_configs", None)
            targets_file = _targets_file(SERVICE_BY_NAME[name])
            if not targets_file.exists():
                _write_atomic(targets_file, "[]\n")
            job["file_sd_configs"] = [{"files": [str(targets_file)], "refresh_interval": "10s"}]
        elif name in _INFRA_JOBS:
            for static in job.get("static_configs", []):
                static["targets"] = [f"{HOST}:{PORTS[_INFRA_JOBS[name]]}"]
    path = PROMETHEUS_HOME / "prometheus.yml"
    header = f"# Rendered by `python -m constellation stack` from {PROMETHEUS_CONFIG.relative_to(ROOT)}.\n"
    _write_atomic(path, header + yaml.safe_dump(config, sort_keys=False))
    return path


def render_alertmanager_config() -> Path:
    """deploy/alertmanager/alertmanager.local.yml pointing at this stack's alerter."""
    import yaml

    config = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())
    alerter = SERVICE_BY_NAME["alerter"]
    # The alerter's webhook wants a producer key: written next to the config, 0600.
    key_file = ALERTMANAGER_HOME / "alerter-api-key"
    api_keys.write_private_text(key_file, api_keys.ensure(STATE).key(api_keys.Role.PRODUCER))
    for receiver in config.get("receivers", []):
        for webhook in receiver.get("webhook_configs", []):
            if str(webhook.get("url", "")).endswith("/alertmanager"):
                webhook["url"] = f"http://{HOST}:{alerter.port}/alertmanager"
                authorization = webhook.setdefault("http_config", {}).setdefault("authorization", {})
                authorization.pop("credentials", None)
                authorization["credentials_file"] = str(key_file)
    path = ALERTMANAGER_HOME / "alertmanager.yml"
    header = f"# Rendered by `python -m constellation stack` from {ALERTMANAGER_CONFIG.relative_to(ROOT)}.\n"
    _write_atomic(path, header + yaml.safe_dump(config, sort_keys=False))
    return path


def _start_observer(name: str, url: str, binary: str | None, package: str, args: list[str]) -> bool:
    """Start Prometheus or Alertmanager; one already running reloads its configuration instead.

    Returns True when it was started (False: it was running).
    """
    ready = f"{url}/-/ready"
    if http_ok(ready):
        # Pick up a changed config or rule file (Prometheus runs with --web.enable-lifecycle).
        http_post(f"{url}/-/reload")
        print(f"  {name}: running on {url}")
        return False
    if binary is None:
        raise StackError(f"{name}: not installed (apt-get install {package})")
    spawn(name, [binary, *args], platform_env())
    wait_for(name, lambda: http_ok(ready), 90)
    return True


def start_alertmanager() -> None:
    config = render_alertmanager_config()
    args = [
        f"--config.file={config}",
        f"--storage.path={ALERTMANAGER_HOME / 'data'}",
        f"--web.listen-address={HOST}:{PORTS['alertmanager']}",
        f"--web.external-url={ALERTMANAGER_URL}",
        # A single instance: no gossip (it would also bind 0.0.0.0:9094).
        "--cluster.listen-address=",
    ]
    if _start_observer(
        "alertmanager", ALERTMANAGER_URL, alertmanager_binary(), "prometheus-alertmanager", args
    ):
        print(f"  alertmanager: started on {ALERTMANAGER_URL} (routes to the alerter's /alertmanager)")


def node_exporter_running() -> bool:
    return http_ok(f"{NODE_EXPORTER_URL}/metrics", timeout_s=5)


def start_node_exporter() -> None:
    """Debian's node exporter on NODE_EXPORTER_PORT (host CPU, memory, file systems, load)."""
    if node_exporter_running():
        print(f"  node-exporter: running on {NODE_EXPORTER_URL}")
        return
    binary = node_exporter_binary()
    if binary is None:
        raise StackError(f"node-exporter: {NODE_EXPORTER_MISSING}")
    args = [
        f"--web.listen-address={HOST}:{PORTS['node-exporter']}",
        # The stack's processes are plain processes: systemd and the like have nothing to say.
        "--no-collector.systemd",
    ]
    spawn("node-exporter", [binary, *args], platform_env())
    wait_for("node-exporter", node_exporter_running, 60)
    print(f"  node-exporter: started on {NODE_EXPORTER_URL}")


def node_exporter_status() -> ComponentStatus:
    """The node exporter's row of ``stack status`` (saying so when its package is missing)."""
    pid = running_pid("node-exporter")
    if pid is None and node_exporter_binary() is None:
        return ComponentStatus(
            "node-exporter", None, NODE_EXPORTER_URL, False, {"note": NODE_EXPORTER_MISSING}
        )
    return ComponentStatus("node-exporter", pid, NODE_EXPORTER_URL, node_exporter_running())


AVAILABILITY_QUERY = "min by (service) (service_availability_ratio)"


def service_availability() -> dict[str, float]:
    """Availability per service measured from heartbeats: the auto-responder's view
    (GET /availability), else its gauge in Prometheus; empty when neither answers."""
    from urllib.parse import quote

    responder = SERVICE_BY_NAME.get("auto-responder")
    keys = api_keys.load(STATE)
    if responder is not None and keys is not None:
        body = http_json(
            f"http://{HOST}:{responder.port}/availability",
            timeout_s=2,
            headers=keys.headers(api_keys.Role.VIEWER),
        )
        services = (body or {}).get("services")
        if isinstance(services, dict):
            return {
                str(name): float(view["ratio"])
                for name, view in services.items()
                if isinstance(view, dict) and view.get("ratio") is not None
            }
    body = http_json(f"{PROMETHEUS_URL}/api/v1/query?query={quote(AVAILABILITY_QUERY)}", timeout_s=2)
    result = ((body or {}).get("data") or {}).get("result") or []
    return {
        str(sample["metric"].get("service")): float(sample["value"][1])
        for sample in result
        if isinstance(sample, dict) and sample.get("metric", {}).get("service")
    }


def start_prometheus() -> None:
    config = render_prometheus_config()
    args = [
        f"--config.file={config}",
        f"--storage.tsdb.path={PROMETHEUS_HOME / 'data'}",
        "--storage.tsdb.retention.time=7d",
        f"--web.listen-address={HOST}:{PORTS['prometheus']}",
        f"--web.external-url={PROMETHEUS_URL}",
        "--web.enable-lifecycle",
    ]
    if _start_observer("prometheus", PROMETHEUS_URL, prometheus_binary(), "prometheus", args):
        print(f"  prometheus: started on {PROMETHEUS_URL} (rules: {PROMETHEUS_RULES.relative_to(ROOT)})")


def start_observability() -> None:
    """Alertmanager, then Prometheus; optional locally, so a failure is a warning."""
    if not observability_enabled():
        print("  observability: skipped (STACK_OBSERVABILITY=0)")
        return
    if not install_observability():
        return
    try:
        start_node_exporter()
    except StackError as exc:
        print(f"  WARNING: {exc}")
    try:
        start_alertmanager()
        start_prometheus()
    except StackError as exc:
        print(f"  WARNING: running without metrics: {exc}")


# --------------------------------------------------------------------------- services


def _instance_names(spec: ServiceSpec) -> list[tuple[str, int]]:
    """Running instances of a service: (process name, index)."""
    names = []
    for path in sorted(RUN.glob(f"{spec.name}*.pid")):
        stem = path.stem
        if stem == spec.name:
            names.append((stem, 1))
        elif stem.startswith(f"{spec.name}-") and stem.rsplit("-", 1)[1].isdigit():
            names.append((stem, int(stem.rsplit("-", 1)[1])))
    return names


def _instance_name(spec: ServiceSpec, index: int) -> str:
    return spec.name if index == 1 else f"{spec.name}-{index}"


def service_available(spec: ServiceSpec) -> bool:
    """A service can run once its package ships an entry point (``python -m module``)."""
    import importlib.util

    try:
        return importlib.util.find_spec(f"{spec.module}.__main__") is not None
    except ModuleNotFoundError:
        return False


def start_service(spec: ServiceSpec, index: int = 1, timeout_s: float = 120) -> None:
    name = _instance_name(spec, index)
    port = instance_port(spec, index)
    ready_url = f"http://{HOST}:{port}/ready"
    if running_pid(name) and http_ok(ready_url):
        set_scrape_target(spec, index, present=True)
        print(f"  {name}: running on http://{HOST}:{port}")
        return
    env = platform_env()
    # Its own Kafka principal (limited by the catalogue's ACLs); services only read schemas.
    if kafka_secured():
        env.update(stack_credentials().kafka_env(spec.name))
    for variable in credentials.REGISTRY_CREDENTIAL_VARS:
        env.pop(variable, None)
    env[f"{spec.env_prefix}HTTP_HOST"] = HOST
    env[f"{spec.env_prefix}HTTP_PORT"] = str(port)
    env[f"{spec.env_prefix}INSTANCE_ID"] = f"{name}@{socket.gethostname()}"
    # The digests of the stack's API keys (generated once into .stack/, 0600).
    env.update(api_keys.ensure(STATE).service_env())
    env.setdefault("RESPONDER_SCALE_COMMAND", json.dumps(SCALE_COMMAND))
    spawn(name, [PYTHON, "-m", spec.module], env)
    # Listed before it is ready: an instance that fails to come up shows as down.
    set_scrape_target(spec, index, present=True)
    wait_for(name, lambda: http_ok(ready_url), timeout_s)
    print(f"  {name}: started on http://{HOST}:{port} (docs: /docs)")


def scale(service: str, instances: int) -> None:
    spec = SERVICE_BY_NAME.get(service)
    if spec is None:
        raise StackError(f"unknown service {service!r}; known: {', '.join(SERVICE_BY_NAME)}")
    if instances < 1:
        raise StackError("a service needs at least one instance")
    running = _instance_names(spec)
    for index in range(1, instances + 1):
        start_service(spec, index)
    for name, index in running:
        if index > instances:
            stop(name)
            set_scrape_target(spec, index, present=False)
            print(f"  {name}: stopped (scaled to {instances})")


def bootstrap_model(*options: str) -> str:
    """Run ``python -m constellation bootstrap-model OPTIONS``; returns the champion's version."""
    result = subprocess.run(  # noqa: S603
        [PYTHON, "-m", "constellation", "bootstrap-model", *options],
        env=platform_env(),
        check=False,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise StackError(f"training the champion model failed:\n{result.stdout}{result.stderr}")
    return result.stdout.strip().splitlines()[-1]


def ensure_champion() -> None:
    """Train and register the first champion if the registry has none."""
    print(f"  model: fraud_detector@champion is version {bootstrap_model()}")


# --------------------------------------------------------------------------- commands


INFRA = ["kafka", "schema-registry", "mlflow", "alertmanager", "node-exporter", "prometheus"]


def up(infra_only: bool) -> None:
    print("Starting the local stack...")
    if kafka_secured():
        stack_credentials()
        # In-process operator work (the demo, bootstrap) acts as admin too.
        credentials.export_operator_env(os.environ, credentials.credentials_path(STATE))
    start_kafka()
    secure_kafka()
    start_registry()
    start_mlflow()
    provision()
    # With the infrastructure, so it is there for `--infra` too (the tests' stack); it
    # scrapes each service once the stack starts it (see set_scrape_target).
    start_observability()
    if infra_only:
        return
    services = [spec for spec in SERVICES if service_available(spec)]
    if any(spec.needs_model for spec in services):
        ensure_champion()
    for spec in services:
        start_service(spec)


def down(infra: bool, services: bool) -> None:
    if services:
        for spec in reversed(SERVICES):
            for name, _index in _instance_names(spec):
                if stop(name):
                    print(f"  {name}: stopped")
        clear_scrape_targets()
    if infra:
        for name in reversed(INFRA):
            if stop(name, timeout_s=60):
                print(f"  {name}: stopped")


@dataclass
class ComponentStatus:
    name: str
    pid: int | None
    url: str
    healthy: bool
    details: dict[str, object] = field(default_factory=dict)
    #: a service's availability from its heartbeats (auto-responder), when known
    availability: float | None = None


def collect_status() -> list[ComponentStatus]:
    rows = [
        ComponentStatus("kafka", running_pid("kafka"), KAFKA_BOOTSTRAP, port_open(PORTS["kafka"], HOST)),
        ComponentStatus(
            "schema-registry",
            running_pid("schema-registry"),
            REGISTRY_URL,
            http_ok(f"http://{HOST}:{PORTS['schema-registry']}/ready"),
        ),
        ComponentStatus("mlflow", running_pid("mlflow"), MLFLOW_URL, http_ok(f"{MLFLOW_URL}/health")),
        ComponentStatus(
            "prometheus", running_pid("prometheus"), PROMETHEUS_URL, http_ok(f"{PROMETHEUS_URL}/-/ready")
        ),
        ComponentStatus(
            "alertmanager",
            running_pid("alertmanager"),
            ALERTMANAGER_URL,
            http_ok(f"{ALERTMANAGER_URL}/-/ready"),
        ),
        node_exporter_status(),
    ]
    availability = service_availability()
    for spec in SERVICES:
        instances = _instance_names(spec) or [(spec.name, 1)]
        for name, index in instances:
            url = f"http://{HOST}:{instance_port(spec, index)}"
            rows.append(ComponentStatus(name, running_pid(name), url, False, _readiness(url)))
            rows[-1].healthy = bool(rows[-1].details.get("ready"))
            rows[-1].availability = availability.get(spec.name)
    return rows


def _readiness(url: str) -> dict[str, object]:
    return dict(http_json(f"{url}/ready", timeout_s=2) or {})


def print_status(as_json: bool) -> bool:
    rows = collect_status()
    if as_json:
        print(json.dumps([row.__dict__ for row in rows], indent=2, default=str))
        return all(row.healthy for row in rows if row.pid)
    print(f"{'component':<18} {'state':<10} {'pid':>7} {'avail':>8}  url")
    for row in rows:
        state = "healthy" if row.healthy else ("starting" if row.pid else "stopped")
        if row.pid and not row.healthy and row.details:
            state = "degraded"
        avail = f"{row.availability:.2%}" if row.availability is not None else "-"
        print(f"{row.name:<18} {state:<10} {row.pid or '-':>7} {avail:>8}  {row.url}")
        if row.details.get("note"):
            print(f"{'':<18}   ! {row.details['note']}")
        checks = row.details.get("checks")
        if isinstance(checks, dict) and not row.healthy:
            for check, result in checks.items():
                if isinstance(result, dict) and not result.get("ok"):
                    print(f"{'':<18}   ! {check}: {result.get('detail')}")
    return all(row.healthy for row in rows if row.pid)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m constellation stack",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_up = sub.add_parser("up")
    p_up.add_argument("--infra", action="store_true", help="only Kafka, registry, MLflow and provisioning")
    p_down = sub.add_parser("down")
    p_down.add_argument("--services", action="store_true", help="only the services")
    p_status = sub.add_parser("status")
    p_status.add_argument("--json", action="store_true")
    p_scale = sub.add_parser("scale")
    p_scale.add_argument("service")
    p_scale.add_argument("instances", type=int)
    p_restart = sub.add_parser("restart")
    p_restart.add_argument("name")
    sub.add_parser("provision")
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            up(args.infra)
        elif args.command == "down":
            down(infra=not args.services, services=True)
        elif args.command == "status":
            return 0 if print_status(args.json) else 1
        elif args.command == "scale":
            scale(args.service, args.instances)
        elif args.command == "restart":
            restart(args.name)
        elif args.command == "provision":
            provision()
    except StackError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 1
    return 0


def restart(name: str) -> None:
    starters = {
        "kafka": start_kafka,
        "schema-registry": start_registry,
        "mlflow": start_mlflow,
        "prometheus": start_prometheus,
        "alertmanager": start_alertmanager,
        "node-exporter": start_node_exporter,
    }
    stop(name, timeout_s=60)
    if name in starters:
        starters[name]()
    elif name in SERVICE_BY_NAME:
        start_service(SERVICE_BY_NAME[name])
    else:
        raise StackError(f"unknown component {name!r}")


if __name__ == "__main__":
    sys.exit(main())
