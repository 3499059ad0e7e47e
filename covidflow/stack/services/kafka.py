"""Apache Kafka in KRaft mode, one node acting as broker and controller, from Maven Central.

There is no Apache download site on our network, so the broker runs from the ``kafka_2.13`` jar and its
dependencies on a plain classpath (main class ``kafka.Kafka``), as the start scripts of the tarball would.
"""

from __future__ import annotations

import base64
import logging
import subprocess
import uuid
from pathlib import Path

from covidflow import settings
from covidflow.clients import jaas_quoted
from covidflow.stack.connections import KAFKA_CLIENT_USER, KAFKA_SASL_MECHANISM, KAFKA_SECURITY_PROTOCOL
from covidflow.stack.credentials import local_secret, write_private
from covidflow.stack.fetch import MavenCoord, maven_classpath
from covidflow.stack.home import StackHome
from covidflow.stack.service import HOST, ProcessSpec, Service, java_home

log = logging.getLogger(__name__)

# 4.3.1: the newest patch release of a 4.x line (4.4.0 is a fresh .0); its bytecode targets Java 17.
KAFKA_VERSION = "4.3.1"
# The POM names no logging backend and brings slf4j-api 1.7.36, which ignores log4j-slf4j2-impl (an SLF4J 2
# provider) and falls back to a no-op logger: slf4j-api 2 must be a direct dependency too, to win Maven's
# nearest-first resolution, or the broker logs nothing.
LOG4J_VERSION = "2.25.5"
SLF4J_VERSION = "2.0.17"
COORDS = (
    MavenCoord("org.apache.kafka", "kafka_2.13", KAFKA_VERSION),
    MavenCoord("org.slf4j", "slf4j-api", SLF4J_VERSION),
    MavenCoord("org.apache.logging.log4j", "log4j-core", LOG4J_VERSION),
    MavenCoord("org.apache.logging.log4j", "log4j-slf4j2-impl", LOG4J_VERSION),
)

CLASSPATH_NAME = f"kafka-{KAFKA_VERSION}"
NODE_ID = 1
#: The listener clients use; its protocol is the connection's (covidflow.stack.connections).
CLIENT_LISTENER = "SASL_PLAINTEXT"
PLAIN_LOGIN_MODULE = "org.apache.kafka.common.security.plain.PlainLoginModule"
#: The broker's own SASL user (inter-broker traffic, which on one node is the broker talking to itself).
BROKER_USER = "broker"


def sasl_users(home: StackHome) -> dict[str, str]:
    """SASL/PLAIN users of the local broker, name -> password: the broker's own first, then covidflow's client."""
    return {
        BROKER_USER: local_secret(home, "kafka_broker_password"),
        KAFKA_CLIENT_USER: local_secret(home, "kafka_client_password"),
    }


def server_properties(
    log_dir: Path,
    users: dict[str, str],
    port: int = settings.KAFKA_PORT,
    controller_port: int = settings.KAFKA_CONTROLLER_PORT,
) -> str:
    """A single-node KRaft configuration: loopback listeners only, every replication factor and min ISR at 1.

    Clients and the broker itself authenticate with SASL/PLAIN on the one client listener (``users``: name ->
    password, the broker's own user first). The controller listener stays plain: KRaft's quorum traffic, loopback
    only, and clients are never sent there. The passwords live in this file only (mode 600); the broker's logged
    configuration does not show the listener's JAAS setting (tests/integration/test_security.py reads its log).
    """
    broker_user, broker_password = next(iter(users.items()))
    jaas = " ".join(
        [PLAIN_LOGIN_MODULE, "required", f"username={jaas_quoted(broker_user)}"]
        + [f"password={jaas_quoted(broker_password)}"]
        + [f"user_{name}={jaas_quoted(password)}" for name, password in users.items()]
    )
    settings_ = {
        "process.roles": "broker,controller",
        "node.id": str(NODE_ID),
        # A dynamic quorum of one voter (formatted with --standalone) rather than static controller.quorum.voters.
        "controller.quorum.bootstrap.servers": f"{HOST}:{controller_port}",
        "listeners": f"{CLIENT_LISTENER}://{HOST}:{port},CONTROLLER://{HOST}:{controller_port}",
        "advertised.listeners": f"{CLIENT_LISTENER}://{HOST}:{port},CONTROLLER://{HOST}:{controller_port}",
        "listener.security.protocol.map": f"{CLIENT_LISTENER}:{KAFKA_SECURITY_PROTOCOL},CONTROLLER:PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": CLIENT_LISTENER,
        "sasl.enabled.mechanisms": KAFKA_SASL_MECHANISM,
        "sasl.mechanism.inter.broker.protocol": KAFKA_SASL_MECHANISM,
        f"listener.name.{CLIENT_LISTENER.lower()}.{KAFKA_SASL_MECHANISM.lower()}.sasl.jaas.config": f"{jaas};",
        "log.dirs": str(log_dir),
        "num.partitions": "1",
        # Topics are created by the project with explicit settings (include/config/topics.yaml), never by accident.
        "auto.create.topics.enable": "false",
        "default.replication.factor": "1",
        "min.insync.replicas": "1",
        "offsets.topic.replication.factor": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        # No other members will ever join: do not wait for them before the first rebalance.
        "group.initial.rebalance.delay.ms": "0",
        "log.retention.hours": "168",
    }
    return "".join(f"{key}={value}\n" for key, value in settings_.items())


LOG4J2_PROPERTIES = """\
# Broker at INFO on stdout (the stack runner writes stdout to logs/kafka.log); noisy internals at WARN.
status = warn
appender.stdout.type = Console
appender.stdout.name = STDOUT
appender.stdout.layout.type = PatternLayout
appender.stdout.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
logger.controller.name = kafka.controller
logger.controller.level = INFO
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.authorizer.name = kafka.authorizer.logger
logger.authorizer.level = WARN
"""


def new_cluster_id() -> str:
    """What ``kafka-storage random-uuid`` prints: 16 random bytes, URL-safe base64 without padding."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


def is_formatted(log_dir: Path) -> bool:
    """``StorageTool format`` writes meta.properties into the log dir; its presence means: never format again."""
    return (log_dir / "meta.properties").is_file()


class KafkaService(Service):
    name = "kafka"
    port = settings.KAFKA_PORT
    extra_ports = (settings.KAFKA_CONTROLLER_PORT,)
    start_timeout = 90.0
    heap = "512m"

    def fetch(self, home: StackHome) -> None:
        maven_classpath(CLASSPATH_NAME, COORDS, home.cache)

    def _conf(self, home: StackHome) -> Path:
        return home.conf_dir(self.name)

    def _java(self, home: StackHome, main: str, *args: str, heap: str) -> list[str]:
        conf = self._conf(home)
        # A classpath wildcard over the folder maven_classpath fills: `stack status` calls processes() and
        # must not resolve (download) anything.
        classpath = str(home.cache / "maven" / CLASSPATH_NAME / "*")
        return [
            str(java_home(17) / "bin" / "java"),
            f"-Xms{heap}",
            f"-Xmx{heap}",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={conf / 'log4j2.properties'}",
            "-cp",
            classpath,
            main,
            *args,
        ]

    def prepare(self, home: StackHome) -> None:
        conf = self._conf(home)
        log_dir = home.data_dir(self.name)
        write_private(conf / "server.properties", server_properties(log_dir, sasl_users(home)))  # the SASL passwords
        (conf / "log4j2.properties").write_text(LOG4J2_PROPERTIES)
        if is_formatted(log_dir):
            return
        argv = self._java(
            home,
            "kafka.tools.StorageTool",
            "format",
            "--standalone",
            "--ignore-formatted",
            "--cluster-id",
            new_cluster_id(),
            "--config",
            str(conf / "server.properties"),
            heap="256m",
        )
        log.info("kafka: formatting storage in %s", log_dir)
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        if proc.returncode != 0 or not is_formatted(log_dir):
            out = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-20:])
            raise RuntimeError(f"kafka storage format failed (exit {proc.returncode}):\n{out}")

    def processes(self, home: StackHome) -> list[ProcessSpec]:
        properties = str(self._conf(home) / "server.properties")
        return [ProcessSpec(name=self.name, argv=self._java(home, "kafka.Kafka", properties, heap=self.heap))]

    def is_healthy(self) -> bool:
        return kafka_healthy()


def kafka_healthy(bootstrap: str | None = None, timeout: float = 2.0) -> bool:
    """True when a broker answers a Metadata request over the Kafka protocol, logged in as the
    ``covidflow_kafka`` connection says (``clients.kafka_config``); never raises."""
    try:
        from confluent_kafka.admin import AdminClient

        from covidflow.clients import kafka_config

        admin = AdminClient(
            kafka_config(
                {
                    "socket.timeout.ms": int(timeout * 1000),
                    "socket.connection.setup.timeout.ms": int(timeout * 1000),
                    "log_level": 0,  # a broker that is down is an answer here, not an error to print
                },
                bootstrap=bootstrap,
            )
        )
        metadata = admin.list_topics(timeout=timeout)
        return bool(metadata.brokers)
    except Exception:
        return False
