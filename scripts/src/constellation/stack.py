"""Local constellation without Docker: install, start, stop and inspect every process.

    python -m constellation stack up [--infra]        start Kafka, schema registry, MLflow
                                                      (+ provisioning), Prometheus and Alertmanager
                                                      (when installed), then the services unless --infra
    python -m constellation stack down [--services]   stop the services (and the infrastructure
                                                      unless --services)
    python -m constellation stack status [--json]     what runs, where, and whether it is healthy
    python -m constellation stack scale NAME N        run N instances of a service (one consumer group)
    python -m constellation stack restart NAME        stop and start one component
    python -m constellation stack kill NAME           SIGKILL one component (fault tests)
    python -m constellation stack start NAME          start one component that is not running
    python -m constellation stack provision           create missing topics, register schemas

Everything lives under ``.stack/`` (git-ignored): binaries, data, logs and pid files.
Prometheus, Alertmanager and the node exporter come from Debian's packages (``prometheus``,
``prometheus-alertmanager``, ``prometheus-node-exporter``), installed on first use when running
as root; without them the stack runs unobserved (a warning says so; without the node
exporter only the host figures lack, ``stack status`` says so), and ``STACK_OBSERVABILITY=0``
skips them.
Every command is idempotent: starting what already runs healthy does nothing, and a
stale pid file is cleaned up. Ports and hosts come from the environment (see PORTS).

``KAFKA_BROKERS=3`` runs Kafka as a three-node KRaft cluster (``kafka-1`` .. ``kafka-3``, each
broker and controller, on consecutive ports from ``KAFKA_PORT``, controllers after them) with
replication factor 3 and ``min.insync.replicas=2`` for the catalogue's and Kafka's internal
topics; the default is the single broker ``kafka``. NAME of restart/kill/start is a Kafka node,
``kafka`` (all nodes), ``schema-registry``, ``mlflow``, ``prometheus``, ``alertmanager`` or a
service instance.

The services are the service catalogue's (``schemas/services.yaml``), started in its order
as ``python -m <module>`` on its ports; ``<PREFIX>HTTP_PORT`` moves a service's first
instance, and extra instances listen 100 ports above the one before.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
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


def _broker_count() -> int:
    raw = os.environ.get("KAFKA_BROKERS", "1").strip() or "1"
    try:
        count = int(raw)
    except ValueError:
        count = 0
    if count < 1:
        raise SystemExit(f"KAFKA_BROKERS must be a positive number of brokers (1 or 3), got {raw!r}")
    return count


#: Kafka nodes of this stack (KAFKA_BROKERS): 1 for laptops, 3 for a cluster that survives a broker.
KAFKA_BROKERS = _broker_count()
PORTS = {
    "kafka": _port("KAFKA_PORT", 9092),
    # With several brokers their listeners take consecutive ports from KAFKA_PORT, and the
    # controllers the ones after those (9092-9094 and 9095-9097 for three).
    "kafka-controller": _port(
        "KAFKA_CONTROLLER_PORT", 9093 if KAFKA_BROKERS == 1 else _port("KAFKA_PORT", 9092) + KAFKA_BROKERS
    ),
    "schema-registry": _port("SCHEMA_REGISTRY_PORT", 8081),
    "mlflow": _port("MLFLOW_PORT", 5000),
    "prometheus": _port("PROMETHEUS_PORT", 9090),
    "alertmanager": _port("ALERTMANAGER_PORT", 9093 + 100),
}


@dataclass(frozen=True)
class KafkaNode:
    """One KRaft node (broker and controller) of the stack's Kafka: its name, ports and files.

    A single broker is ``kafka`` with the layout of earlier stacks (``kafka/data``,
    ``kafka/server.properties``); the nodes of a cluster are ``kafka-1`` .. ``kafka-N``, each
    with its own data folder (``kafka/data-N``), configuration and log folder.
    """

    node_id: int
    name: str
    port: int
    controller_port: int
    data: Path
    config: Path

    @property
    def bootstrap(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def scram_marker(self) -> Path:
        """Written when the storage is formatted with the admin's SCRAM credentials."""
        return self.data / ".scram-users"


def kafka_nodes(count: int = KAFKA_BROKERS) -> list[KafkaNode]:
    """The Kafka nodes of this stack (``KAFKA_BROKERS`` of them) on consecutive ports."""
    home = STATE / "kafka"
    if count == 1:
        return [
            KafkaNode(
                1,
                "kafka",
                PORTS["kafka"],
                PORTS["kafka-controller"],
                home / "data",
                home / "server.properties",
            )
        ]
    return [
        KafkaNode(
            i,
            f"kafka-{i}",
            PORTS["kafka"] + i - 1,
            PORTS["kafka-controller"] + i - 1,
            home / f"data-{i}",
            home / f"server-{i}.properties",
        )
        for i in range(1, count + 1)
    ]


def replication(brokers: int = KAFKA_BROKERS) -> tuple[int, int]:
    """(replication factor, min.insync.replicas) for a cluster of ``brokers``: (1, 1) or (3, 2)."""
    factor = min(brokers, 3)
    return factor, max(1, factor - 1)


KAFKA_NODES = kafka_nodes()
KAFKA_NODE_BY_NAME = {node.name: node for node in KAFKA_NODES}
KAFKA_BOOTSTRAP = ",".join(node.bootstrap for node in KAFKA_NODES)
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
KAFKA_DATA = KAFKA_NODES[0].data
# Written when the storage is formatted with the admin's SCRAM credentials.
SCRAM_MARKER = KAFKA_NODES[0].scram_marker


def kafka_secured() -> bool:
    """Whether this stack's Kafka runs with SASL/SCRAM and ACLs (always, once formatted by this stack).

    A data folder formatted by an older stack (no SCRAM users) keeps running PLAINTEXT, without
    credentials, until it is removed: ``make stack-down && rm -rf .stack/kafka/data && make stack-up``.
    (Clusters, ``KAFKA_BROKERS`` > 1, are always formatted with SCRAM.)
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
    # Kafka topics created by the registry (its store) and the recommender (Faust's changelogs)
    # follow the cluster size like the catalogue's.
    factor, _min_insync = replication()
    env.setdefault("SCHEMA_REGISTRY_TOPIC_REPLICATION_FACTOR", str(factor))
    env.setdefault("RECOMMENDER_REPLICATION_FACTOR", str(factor))
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
    return bool(stop_together([name], timeout_s))


def stop_together(names: list[str], timeout_s: float = 30.0) -> list[str]:
    """:func:`stop` several processes at once; returns the names that were running.

    The nodes of a Kafka cluster stop together: stopped one after the other, the last ones
    lose their controller quorum and wait for it instead of shutting down.
    """
    pids = {name: pid for name in names if (pid := running_pid(name)) is not None}
    for pid in pids.values():
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(running_pid(name) is not None for name in pids):
        time.sleep(0.2)
    for name, pid in pids.items():
        if running_pid(name) is not None:
            print(f"  {name}: did not stop within {timeout_s:.0f}s, killing")
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            time.sleep(0.5)
        _pid_file(name).unlink(missing_ok=True)
    return list(pids)


def log_tail(name: str, lines: int = 15) -> str:
    """The last lines of a stack process's log."""
    return tail(_log_file(name), lines)


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


STORAGE_TOOL = "kafka.tools.StorageTool"


def _cluster_marker() -> Path:
    return KAFKA_HOME / "brokers"


def _check_cluster_size() -> None:
    """Refuse to start a number of brokers other than the one the data was formatted for.

    The quorum's voters are written into every node's metadata when the storage is formatted:
    a single broker's data cannot join a cluster, nor a cluster's nodes run alone.
    """
    marker = _cluster_marker()
    formatted = int(marker.read_text().strip()) if marker.exists() else None
    if formatted is None and (KAFKA_HOME / "data" / "meta.properties").exists():
        formatted = 1  # formatted by a stack from before KAFKA_BROKERS
    if formatted is not None and formatted != KAFKA_BROKERS:
        raise StackError(
            f"kafka: {KAFKA_HOME} holds a {formatted}-broker cluster but KAFKA_BROKERS={KAFKA_BROKERS}; "
            f"run with KAFKA_BROKERS={formatted}, or stop the stack and remove {KAFKA_HOME}/data* "
            "(its topics are lost), or use another STACK_DIR"
        )


def _kafka_log_props(node: KafkaNode) -> list[str]:
    logs = LOGS / node.name
    logs.mkdir(parents=True, exist_ok=True)
    return [
        f"-Dlog4j2.configurationFile={ROOT / 'deploy' / 'kafka' / 'log4j2.properties'}",
        f"-Dkafka.logs.dir={logs}",
    ]


def _render_kafka_config(node: KafkaNode, secured: bool, admin_password: str) -> None:
    parts = ["server.properties.template", *(["security.properties.template"] if secured else [])]
    template = string.Template("\n".join((ROOT / "deploy" / "kafka" / part).read_text() for part in parts))
    factor, min_insync = replication()
    voters = ",".join(f"{n.node_id}@{HOST}:{n.controller_port}" for n in KAFKA_NODES)
    node.config.parent.mkdir(parents=True, exist_ok=True)
    node.config.touch(mode=0o600)
    node.config.chmod(0o600)
    node.config.write_text(
        template.substitute(
            host=HOST,
            port=node.port,
            controller_port=node.controller_port,
            node_id=node.node_id,
            quorum_voters=voters,
            replication_factor=factor,
            min_insync_replicas=min_insync,
            data_dir=node.data,
            protocol="SASL_PLAINTEXT" if secured else "PLAINTEXT",
            admin_password=admin_password,
        )
    )


def _format_kafka(node: KafkaNode, cluster_id: str, classpath: str, admin_password: str) -> None:
    node.data.mkdir(parents=True, exist_ok=True)
    formatted = subprocess.run(  # noqa: S603
        [
            _java(),
            *_kafka_log_props(node),
            "-cp",
            classpath,
            STORAGE_TOOL,
            "format",
            "-t",
            cluster_id,
            "-c",
            str(node.config),
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
            f"{node.name}: formatting the KRaft storage failed:\n{formatted.stdout}{formatted.stderr}"
        )
    node.scram_marker.write_text("SCRAM-SHA-512 admin added at format time\n")


# Kafka's own start-script options (kafka-run-class.sh). Without the 20 ms pause target G1
# aims at 200 ms, grows a young generation of hundreds of MB, and its pauses (70-85 ms each on
# the 2-core machine under load, every few seconds) become the pipeline's tail latency.
KAFKA_G1_OPTIONS = (
    "-XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 "
    "-XX:+ExplicitGCInvokesConcurrent"
)
# Even with that target G1's young pauses took 15-40 ms every 1-3 s at 1,000 events/s (scanning
# the old generation's dirty cards, two GC threads sharing two busy cores). Shenandoah
# evacuates concurrently: its pauses stay under 1.5 ms, which took p99 at 250 and 1,000
# events/s down by a fifth to a third (docs/performance.md).
KAFKA_SHENANDOAH_OPTIONS = "-XX:+UseShenandoahGC -XX:+ExplicitGCInvokesConcurrent"


@functools.cache
def _jvm_accepts(option: str) -> bool:
    """Whether the machine's JVM starts with ``option`` (Shenandoah is missing from some builds)."""
    probe = subprocess.run([_java(), option, "-version"], capture_output=True, check=False)
    return probe.returncode == 0


def kafka_jvm_options() -> str:
    """The broker's collector options.

    ``KAFKA_JVM_PERFORMANCE_OPTS`` when set, else Shenandoah where the JVM has it, else G1.
    """
    override = os.environ.get("KAFKA_JVM_PERFORMANCE_OPTS")
    if override:
        return override
    return KAFKA_SHENANDOAH_OPTIONS if _jvm_accepts("-XX:+UseShenandoahGC") else KAFKA_G1_OPTIONS


def _spawn_kafka(node: KafkaNode, classpath: str) -> None:
    heap = os.environ.get("KAFKA_HEAP_OPTS", "-Xms256m -Xmx1g")
    performance = kafka_jvm_options()
    spawn(
        node.name,
        [
            _java(),
            *heap.split(),
            *performance.split(),
            "-Djava.awt.headless=true",
            *_kafka_log_props(node),
            "-cp",
            classpath,
            "kafka.Kafka",
            str(node.config),
        ],
        platform_env(),
    )


def start_kafka(only: KafkaNode | None = None) -> None:
    """Start the stack's Kafka nodes that do not run (``only``: that one), formatting new storage.

    The nodes of a cluster are all spawned before any is waited for: a controller quorum of
    three needs two voters before a single broker can serve.
    """
    nodes = [only] if only is not None else KAFKA_NODES
    if all(_node_ready(node) for node in nodes) and (only is not None or _kafka_ready()):
        security = "SASL/SCRAM, ACLs" if kafka_secured() else "PLAINTEXT, formatted by an older stack"
        where = only.bootstrap if only is not None else KAFKA_BOOTSTRAP
        print(f"  {only.name if only else 'kafka'}: running on {where} ({security})")
        return
    _check_cluster_size()
    libs = install_kafka()
    classpath = f"{libs}/*"
    secured = kafka_secured()
    admin_password = stack_credentials().admin_password if secured else ""
    if not secured:
        print(f"  WARNING: {KAFKA_DATA} was formatted by an older stack: Kafka runs PLAINTEXT, without ACLs")
    unformatted = [node for node in KAFKA_NODES if not (node.data / "meta.properties").exists()]
    for node in KAFKA_NODES:
        _render_kafka_config(node, secured, admin_password)
    if unformatted:
        if len(unformatted) != len(KAFKA_NODES):
            missing = ", ".join(str(node.data) for node in unformatted)
            raise StackError(
                f"kafka: {missing} lost its storage while the other nodes kept theirs; stop the stack "
                f"and remove {KAFKA_HOME}/data* to start a new cluster"
            )
        # One cluster id for every node: they form one cluster.
        cluster_id = (
            subprocess.run(  # noqa: S603
                [
                    _java(),
                    *_kafka_log_props(KAFKA_NODES[0]),
                    "-cp",
                    classpath,
                    "kafka.tools.StorageTool",
                    "random-uuid",
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            .stdout.strip()
            .splitlines()[-1]
        )
        for node in KAFKA_NODES:
            _format_kafka(node, cluster_id, classpath, admin_password)
        _cluster_marker().write_text(f"{KAFKA_BROKERS}\n")
    for node in nodes:
        if running_pid(node.name) is None:
            _spawn_kafka(node, classpath)
    for node in nodes:
        wait_for(node.name, functools.partial(_node_ready, node), 180)
        print(f"  {node.name}: started on {node.bootstrap} (logs {LOGS / node.name})")
    if only is None:
        # Every node registered: the cluster serves (and can take replication factor 3).
        wait_for(nodes[0].name, _kafka_ready, 180)


def _node_ready(node: KafkaNode) -> bool:
    """The node listens, answers a metadata request and is a registered (unfenced) broker."""
    if not port_open(node.port, HOST):
        return False
    try:
        settings = admin_settings().model_copy(update={"kafka_bootstrap_servers": node.bootstrap})
        metadata = acls.admin_client(settings).list_topics(timeout=2)
    except Exception:
        return False
    return node.node_id in metadata.brokers


def _kafka_ready() -> bool:
    """Every node of the stack's Kafka is a live broker of the cluster."""
    if not port_open(KAFKA_NODES[0].port, HOST) and len(KAFKA_NODES) == 1:
        return False
    try:
        metadata = acls.admin_client(admin_settings()).list_topics(timeout=2)
    except Exception:
        return False
    return {node.node_id for node in KAFKA_NODES} <= set(metadata.brokers)


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


INFRA = [
    *(node.name for node in KAFKA_NODES),
    "schema-registry",
    "mlflow",
    "alertmanager",
    "node-exporter",
    "prometheus",
]


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
        brokers = [node.name for node in KAFKA_NODES]
        for name in reversed(INFRA[len(brokers) :]):
            if stop(name, timeout_s=60):
                print(f"  {name}: stopped")
        for name in stop_together(brokers, timeout_s=60):
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
        *(
            ComponentStatus(node.name, running_pid(node.name), node.bootstrap, port_open(node.port, HOST))
            for node in KAFKA_NODES
        ),
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
    p_start = sub.add_parser("start", help="start one component that is not running")
    p_start.add_argument("name")
    p_kill = sub.add_parser("kill", help="SIGKILL one component (a crash, for fault tests)")
    p_kill.add_argument("name")
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
        elif args.command == "start":
            start(args.name)
        elif args.command == "kill":
            kill(args.name)
        elif args.command == "provision":
            provision()
    except StackError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 1
    return 0


def _components(name: str) -> list[str]:
    """The processes ``name`` stands for: one component, or every node for ``kafka`` of a cluster."""
    if name == "kafka" and "kafka" not in KAFKA_NODE_BY_NAME:
        return list(KAFKA_NODE_BY_NAME)
    known = [*KAFKA_NODE_BY_NAME, *INFRA[len(KAFKA_NODES) :], *SERVICE_BY_NAME]
    if name not in known and not any(
        name == _instance_name(spec, index) for spec in SERVICES for _n, index in _instance_names(spec)
    ):
        raise StackError(f"unknown component {name!r}; known: {', '.join(dict.fromkeys(known))}")
    return [name]


def start(name: str) -> None:
    """Start one component (a Kafka node, the registry, MLflow, Prometheus, Alertmanager, a service).

    Idempotent: a component that runs healthy is left alone.
    """
    starters: dict[str, Callable[[], None]] = {
        "schema-registry": start_registry,
        "mlflow": start_mlflow,
        "prometheus": start_prometheus,
        "alertmanager": start_alertmanager,
        "node-exporter": start_node_exporter,
    }
    components = _components(name)
    if len(components) > 1 or components[0] in KAFKA_NODE_BY_NAME:
        start_kafka(None if len(components) > 1 else KAFKA_NODE_BY_NAME[components[0]])
    elif name in starters:
        starters[name]()
    else:
        spec, index = _service_instance(name)
        start_service(spec, index)


def _service_instance(name: str) -> tuple[ServiceSpec, int]:
    if name in SERVICE_BY_NAME:
        return SERVICE_BY_NAME[name], 1
    base, _, number = name.rpartition("-")
    return SERVICE_BY_NAME[base], int(number)


def _stopped(name: str) -> bool:
    return running_pid(name) is None


def kill(name: str) -> None:
    """SIGKILL a component's process group: no shutdown, no flush (what a crash looks like)."""
    for component in _components(name):
        pid = running_pid(component)
        if pid is None:
            print(f"  {component}: not running")
            continue
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        # Reaped by init (the stack's processes are detached); wait until it is really gone.
        gone = functools.partial(_stopped, component)
        wait_until(gone, lambda: True, 30, poll_s=0.1)
        _pid_file(component).unlink(missing_ok=True)
        print(f"  {component}: killed (SIGKILL, pid {pid})")


def restart(name: str) -> None:
    """Stop (SIGTERM, then SIGKILL) and start one component."""
    stop_together(_components(name), timeout_s=60)
    start(name)


if __name__ == "__main__":
    sys.exit(main())
