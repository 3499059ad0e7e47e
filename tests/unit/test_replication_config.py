"""Replication is configuration (issue 15 item 5): the configured values reach the CQL, the templates and the topics.

Each test points ``COVIDFLOW_REPLICATION_CONFIG`` (or a topics file) at multi-node values and checks what would be
sent to Cassandra, Elasticsearch or Kafka through fakes that record the calls: with the old hard-coded values
(SimpleStrategy 1, 0 replicas) every one of them fails.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from covidflow import replication
from covidflow.index import es_template, es_writer, maintenance
from covidflow.ops import report
from covidflow.publish.config import topics_config
from covidflow.publish.topics import ensure_topics
from covidflow.store import cassandra_schema, cassandra_writer

CLUSTER = {
    "cassandra": {
        "keyspace_replication": {"class": "NetworkTopologyStrategy", "datacenters": {"dc-paris": 3, "dc_lyon": 2}}
    },
    "elasticsearch": {"number_of_replicas": 2, "number_of_shards": 3},
}
NTS_CQL = "{'class': 'NetworkTopologyStrategy', 'dc-paris': 3, 'dc_lyon': 2}"


@pytest.fixture
def cluster_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "replication.yaml"
    path.write_text(yaml.safe_dump(CLUSTER))
    monkeypatch.setenv(replication.CONFIG_ENV, str(path))
    return path


def _write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, data: dict[str, Any]) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    monkeypatch.setenv(replication.CONFIG_ENV, str(path))


class FakeSession:
    def __init__(self) -> None:
        self.executed: list[str] = []

    def execute(self, stmt: str, timeout: float | None = None) -> None:
        self.executed.append(stmt)


class FakeIndices:
    def __init__(self) -> None:
        self.templates: dict[str, dict[str, Any]] = {}
        self.created: dict[str, dict[str, Any]] = {}

    def put_index_template(self, name: str, **body: Any) -> None:
        self.templates[name] = body

    def exists(self, index: str) -> bool:
        return index in self.created

    def exists_alias(self, name: str) -> bool:
        return False

    def create(self, index: str, **body: Any) -> None:
        self.created[index] = body


class FakeES:
    def __init__(self) -> None:
        self.indices = FakeIndices()
        self.cluster = self

    def health(self, **_: Any) -> None:
        return None


def test_committed_file_holds_the_single_node_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(replication.CONFIG_ENV, raising=False)
    assert replication.cassandra_replication() == {"class": "SimpleStrategy", "replication_factor": 1}
    assert replication.elasticsearch_settings() == {"number_of_shards": 1, "number_of_replicas": 0}
    assert "{'class': 'SimpleStrategy', 'replication_factor': 1}" in cassandra_schema.CQL_PATH.read_text()


def test_missing_sections_fall_back_to_single_node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write(tmp_path, monkeypatch, {"other": 1})
    assert replication.cassandra_replication() == {"class": "SimpleStrategy", "replication_factor": 1}
    assert replication.elasticsearch_settings() == {"number_of_shards": 1, "number_of_replicas": 0}


def test_configured_replication_reaches_the_keyspace_statement(cluster_config: Path) -> None:
    sess = FakeSession()
    cassandra_writer.ensure_schema(sess)  # the path every keyspace creation takes without an explicit map
    create = [s for s in sess.executed if s.startswith("CREATE KEYSPACE")]
    assert create == [f"CREATE KEYSPACE IF NOT EXISTS covidflow\n    WITH replication = {NTS_CQL}"]
    assert cassandra_schema.alter_keyspace_cql() == f"ALTER KEYSPACE covidflow WITH replication = {NTS_CQL};"


def test_simple_strategy_factor_is_configurable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write(tmp_path, monkeypatch, {"cassandra": {"keyspace_replication": {"class": "SimpleStrategy",
                                                                          "replication_factor": 3}}})  # fmt: skip
    assert "WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 3};" in cassandra_schema.generate_cql()


def test_configured_replicas_reach_the_index_templates(cluster_config: Path) -> None:
    es = FakeES()
    es_writer.ensure_index(es)
    settings = es.indices.templates[es_template.TEMPLATE_NAME]["template"]["settings"]
    assert settings == {"number_of_shards": 3, "number_of_replicas": 2}
    assert maintenance.template_for("covid-observations-x")["template"]["settings"] == settings


def test_configured_replicas_reach_the_report_index(cluster_config: Path) -> None:
    es = FakeES()
    report.ensure_index(es, "covidflow-ops-test")
    assert es.indices.created["covidflow-ops-test"]["settings"] == {"number_of_replicas": 2}


def test_explicit_arguments_still_win(cluster_config: Path) -> None:
    tpl = es_template.generate_template(replicas=0, shards=1)
    assert tpl["template"]["settings"] == {"number_of_shards": 1, "number_of_replicas": 0}
    cql = cassandra_schema.generate_cql(replication={"class": "SimpleStrategy", "replication_factor": 1})
    assert "'replication_factor': 1" in cql


@pytest.mark.parametrize(
    ("cassandra", "message"),
    [
        ({"class": "LocalStrategy", "replication_factor": 1}, "class must be one of"),
        ({"class": "SimpleStrategy", "replication_factor": 0}, "replication_factor must be a whole number >= 1"),
        ({"class": "SimpleStrategy", "replication_factor": True}, "replication_factor must be a whole number"),
        ({"class": "SimpleStrategy", "datacenters": {"dc1": 3}}, "SimpleStrategy takes replication_factor only"),
        ({"class": "NetworkTopologyStrategy", "replication_factor": 3}, "takes datacenters"),
        ({"class": "NetworkTopologyStrategy", "datacenters": {}}, "takes datacenters"),
        ({"class": "NetworkTopologyStrategy", "datacenters": {"dc1': 1}; DROP": 3}}, "is not a datacenter name"),
        ({"class": "NetworkTopologyStrategy", "datacenters": {"dc1": "3"}}, "dc1 must be a whole number"),
    ],
)
def test_bad_cassandra_replication_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cassandra: dict[str, Any], message: str
) -> None:
    _write(tmp_path, monkeypatch, {"cassandra": {"keyspace_replication": cassandra}})
    with pytest.raises(replication.ReplicationConfigError, match=message) as err:
        cassandra_schema.generate_cql()
    assert "bad.yaml: cassandra.keyspace_replication" in str(err.value)


@pytest.mark.parametrize(
    ("es", "message"),
    [({"number_of_replicas": -1}, "number_of_replicas"), ({"number_of_shards": 0}, "number_of_shards")],
)
def test_bad_elasticsearch_settings_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, es: dict[str, Any], message: str
) -> None:
    _write(tmp_path, monkeypatch, {"elasticsearch": es})
    with pytest.raises(replication.ReplicationConfigError, match=message):
        es_template.generate_template()


# --- Kafka: replication is per topic, in include/config/topics.yaml ---------------------------------------------


class FakeFuture:
    def result(self, timeout: float | None = None) -> None:
        return None


class FakeAdmin:
    def __init__(self) -> None:
        self.created: list[Any] = []

    def list_topics(self, timeout: float) -> Any:
        return type("Meta", (), {"topics": {}})()

    def create_topics(self, topics: list[Any], **_: Any) -> dict[str, FakeFuture]:
        self.created += topics
        return {t.topic: FakeFuture() for t in topics}


def test_configured_topic_replication_reaches_topic_creation(tmp_path: Path) -> None:
    committed = yaml.safe_load((Path(cassandra_schema.PROJECT_ROOT) / "include/config/topics.yaml").read_text())
    for spec in committed["topics"].values():
        spec["replication_factor"] = 3
        spec["config"]["min.insync.replicas"] = "2"
    path = tmp_path / "topics.yaml"
    path.write_text(yaml.safe_dump(committed))
    admin = FakeAdmin()
    ensure_topics(admin, topics_config(str(path)))
    assert {t.topic for t in admin.created} == set(committed["topics"])
    for topic in admin.created:
        assert topic.replication_factor == 3, topic.topic
        assert topic.config["min.insync.replicas"] == "2", topic.topic


def test_committed_topics_keep_min_insync_within_replication() -> None:
    # min.insync.replicas above the replication factor makes every acks=all write fail (NotEnoughReplicas).
    for name, spec in topics_config(str(cassandra_schema.PROJECT_ROOT / "include/config/topics.yaml")).items():
        min_isr = int((spec.get("config") or {}).get("min.insync.replicas", 1))
        assert 1 <= min_isr <= int(spec["replication_factor"]), name
