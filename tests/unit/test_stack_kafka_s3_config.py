"""Generated configuration of the Kafka and S3 services: no processes, no network."""

from __future__ import annotations

import base64
import stat
from pathlib import Path

import pytest

from covidflow.stack.credentials import local_secret
from covidflow.stack.home import StackHome
from covidflow.stack.services.kafka import KafkaService, is_formatted, new_cluster_id, server_properties
from covidflow.stack.services.s3 import S3PROXY, S3Service, s3_credentials, s3proxy_properties


def _parse(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))


USERS = {"broker": "b-secret", "covidflow": 'c"secret'}


def test_kafka_properties_single_node_on_loopback(tmp_path: Path) -> None:
    props = _parse(server_properties(tmp_path / "kafka", USERS, 9092, 9093))
    assert props["process.roles"] == "broker,controller"
    assert props["listeners"] == "SASL_PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093"
    assert props["advertised.listeners"].startswith("SASL_PLAINTEXT://127.0.0.1:9092")
    assert props["controller.quorum.bootstrap.servers"] == "127.0.0.1:9093"
    assert "controller.quorum.voters" not in props  # --standalone formats a dynamic quorum
    assert props["log.dirs"] == str(tmp_path / "kafka")
    for key in (
        "default.replication.factor",
        "min.insync.replicas",
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "transaction.state.log.min.isr",
        "share.coordinator.state.topic.replication.factor",
        "share.coordinator.state.topic.min.isr",
    ):
        assert props[key] == "1", key


def test_kafka_clients_and_the_broker_itself_log_in_with_sasl_plain(tmp_path: Path) -> None:
    props = _parse(server_properties(tmp_path / "kafka", USERS, 9092, 9093))
    assert props["listener.security.protocol.map"] == "SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:PLAINTEXT"
    assert props["inter.broker.listener.name"] == "SASL_PLAINTEXT"
    assert props["sasl.enabled.mechanisms"] == props["sasl.mechanism.inter.broker.protocol"] == "PLAIN"
    assert props["listener.name.sasl_plaintext.plain.sasl.jaas.config"] == (
        'org.apache.kafka.common.security.plain.PlainLoginModule required username="broker" password="b-secret" '
        'user_broker="b-secret" user_covidflow="c\\"secret";'
    )


def test_kafka_users_are_the_connections(tmp_path: Path) -> None:
    from covidflow.stack.connections import connections
    from covidflow.stack.services.kafka import sasl_users

    home = StackHome(tmp_path)
    extra = connections(home)["covidflow_kafka"]["extra"]
    assert sasl_users(home)[extra["sasl.username"]] == extra["sasl.password"]
    assert list(sasl_users(home)) == ["broker", "covidflow"]
    assert sasl_users(home)["broker"] != extra["sasl.password"]


def test_kafka_properties_are_readable_by_their_owner_only(tmp_path: Path) -> None:
    home = StackHome(tmp_path)
    (home.data_dir("kafka") / "meta.properties").write_text("cluster.id=keep\n")
    KafkaService().prepare(home)
    path = home.conf_dir("kafka") / "server.properties"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert local_secret(home, "kafka_client_password") in path.read_text()


def test_cluster_id_is_a_kafka_uuid() -> None:
    cluster_id = new_cluster_id()
    assert len(cluster_id) == 22
    assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16
    assert new_cluster_id() != cluster_id


def test_formatted_means_meta_properties(tmp_path: Path) -> None:
    assert not is_formatted(tmp_path)
    (tmp_path / "meta.properties").write_text("cluster.id=x\n")
    assert is_formatted(tmp_path)


def test_kafka_prepare_keeps_formatted_storage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = StackHome(tmp_path)
    (home.data_dir("kafka") / "meta.properties").write_text("cluster.id=keep\n")
    monkeypatch.setattr("subprocess.run", lambda *a, **k: pytest.fail("formatted storage must not be formatted again"))
    KafkaService().prepare(home)
    assert (home.data_dir("kafka") / "meta.properties").read_text() == "cluster.id=keep\n"
    assert (home.conf_dir("kafka") / "server.properties").exists()
    assert "rootLogger.level = INFO" in (home.conf_dir("kafka") / "log4j2.properties").read_text()


def test_kafka_command_line(tmp_path: Path) -> None:
    home = StackHome(tmp_path)
    (proc,) = KafkaService().processes(home)
    assert proc.name == "kafka"
    assert {"-Xms512m", "-Xmx512m"} <= set(proc.argv)
    assert proc.argv[-2:] == ["kafka.Kafka", str(home.conf_dir("kafka") / "server.properties")]
    assert proc.argv[proc.argv.index("-cp") + 1] == str(home.cache / "maven" / "kafka-4.3.1" / "*")
    assert not (home.cache / "maven" / "kafka-4.3.1").exists()  # naming the processes fetches nothing


def test_s3proxy_properties_require_signatures(tmp_path: Path) -> None:
    props = _parse(s3proxy_properties(tmp_path / "s3", "AK", "SK", 9000))
    assert props == {
        "s3proxy.endpoint": "http://127.0.0.1:9000",
        "s3proxy.authorization": "aws-v2-or-v4",
        "s3proxy.identity": "AK",
        "s3proxy.credential": "SK",
        "jclouds.provider": "filesystem-nio2",
        "jclouds.filesystem.basedir": str(tmp_path / "s3"),
    }


def test_s3_prepare_writes_private_conf_with_local_secrets(tmp_path: Path) -> None:
    home = StackHome(tmp_path)
    S3Service().prepare(home)
    conf = home.conf_dir("s3") / "s3proxy.conf"
    assert stat.S_IMODE(conf.stat().st_mode) == 0o600
    props = _parse(conf.read_text())
    assert props["s3proxy.identity"] == local_secret(home, "s3_access_key")
    assert props["s3proxy.credential"] == local_secret(home, "s3_secret_key")
    assert s3_credentials(home) == (props["s3proxy.identity"], props["s3proxy.credential"])
    assert props["s3proxy.identity"] != props["s3proxy.credential"]


def test_s3_command_line(tmp_path: Path) -> None:
    home = StackHome(tmp_path)
    (proc,) = S3Service().processes(home)
    assert {"-Xms256m", "-Xmx256m"} <= set(proc.argv)
    assert proc.argv[proc.argv.index("-jar") + 1] == str(home.cache / "maven-files" / S3PROXY.filename)
    assert proc.argv[-2:] == ["--properties", str(home.conf_dir("s3") / "s3proxy.conf")]
