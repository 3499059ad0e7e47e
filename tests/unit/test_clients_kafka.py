"""covidflow.clients' Kafka factory: the confluent config and Spark's kafka.* options from the connection (SASL
included), exactly today's plain config without credentials, and no password in repr or logs. Clients are built,
never connected; Spark is not started here (tests/unit/test_stream_secrets.py does)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from urllib.parse import quote

import pytest

from covidflow import clients, settings

KAFKA_ENV = f"AIRFLOW_CONN_{settings.CONN_KAFKA.upper()}"
CASS_ENV = f"AIRFLOW_CONN_{settings.CONN_CASSANDRA.upper()}"
ES_ENV = f"AIRFLOW_CONN_{settings.CONN_ELASTICSEARCH.upper()}"
SECRET = 'k@fka-"pass"\\word'  # a quote and a backslash: the JAAS line must escape both


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch) -> None:
    for conn_id in clients.STREAM_CONNECTIONS:
        monkeypatch.delenv(f"AIRFLOW_CONN_{conn_id.upper()}", raising=False)
        monkeypatch.delenv(clients.executor_env_name(conn_id), raising=False)
    monkeypatch.delenv("AIRFLOW__SECRETS__BACKEND", raising=False)


def _sasl_extra(**more: str) -> dict[str, str]:
    return {"bootstrap.servers": "b1.example:9093,b2.example:9093", "security.protocol": "SASL_SSL",
            "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "covidflow", "sasl.password": SECRET,
            **more}  # fmt: skip


def test_without_connection_the_config_is_todays_plain_bootstrap() -> None:
    assert clients.kafka_config() == {"bootstrap.servers": settings.KAFKA_BOOTSTRAP}
    assert clients.kafka_config({"group.id": "g"}, bootstrap="h:1") == {"bootstrap.servers": "h:1", "group.id": "g"}
    assert clients.kafka_spark_options() == {"kafka.bootstrap.servers": settings.KAFKA_BOOTSTRAP}
    assert clients.executor_env_conf() == {}


def test_the_local_stacks_connection_logs_in_with_sasl_plain(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """The stack's own connection (covidflow.stack.connections): SASL/PLAIN as covidflow, and the executors get it."""
    from covidflow.stack.connections import connections
    from covidflow.stack.credentials import local_secret
    from covidflow.stack.home import StackHome

    home = StackHome(tmp_path)
    conn = connections(home)[settings.CONN_KAFKA]
    monkeypatch.setenv(KAFKA_ENV, json.dumps(conn))
    overrides = {"enable.idempotence": True, "acks": "all", "linger.ms": 20}
    password = local_secret(home, "kafka_client_password")
    assert clients.kafka_config(overrides) == {
        "bootstrap.servers": settings.KAFKA_BOOTSTRAP, "security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN",
        "sasl.username": "covidflow", "sasl.password": password, **overrides,
    }  # fmt: skip
    assert clients.kafka_spark_options() == {
        "kafka.bootstrap.servers": settings.KAFKA_BOOTSTRAP, "kafka.security.protocol": "SASL_PLAINTEXT",
        "kafka.sasl.mechanism": "PLAIN",
        "kafka.sasl.jaas.config": "org.apache.kafka.common.security.plain.PlainLoginModule required "
                                  f'username="covidflow" password="{password}";',
    }  # fmt: skip
    assert clients.executor_env_conf() == {f"spark.executorEnv.{clients.executor_env_name(settings.CONN_KAFKA)}":
                                           json.dumps(conn)}  # fmt: skip


def test_sasl_settings_come_from_the_connection_extra(monkeypatch: pytest.MonkeyPatch, caplog, capsys) -> None:
    monkeypatch.setenv(KAFKA_ENV, json.dumps({"conn_type": "kafka", "extra": _sasl_extra()}))
    with caplog.at_level(logging.DEBUG):
        config = clients.kafka_config({"group.id": "covidflow-health"})
        logging.getLogger("covidflow.test").info("kafka config %s / %r / %s", config, config, config.describe())
    assert config == {**_sasl_extra(), "group.id": "covidflow-health"}
    out = capsys.readouterr()
    for text in (repr(config), str(config), config.describe(), caplog.text, out.out, out.err):
        assert SECRET not in text
    assert "b1.example:9093" in caplog.text and "'sasl.password': '***'" in repr(config)
    # An address override keeps the credentials.
    moved = clients.kafka_config(bootstrap="127.0.0.1:19092")
    assert (moved["bootstrap.servers"], moved["sasl.password"]) == ("127.0.0.1:19092", SECRET)


def test_the_confluent_clients_accept_the_config(monkeypatch: pytest.MonkeyPatch) -> None:
    """Built, not connected: librdkafka validates every property when the client is created."""
    from confluent_kafka import Consumer, Producer
    from confluent_kafka.admin import AdminClient

    extra = {**_sasl_extra(), "security.protocol": "SASL_PLAINTEXT"}
    monkeypatch.setenv(KAFKA_ENV, json.dumps({"conn_type": "kafka", "extra": extra}))
    Producer(clients.kafka_config({"enable.idempotence": True, "log_level": 0}))
    Consumer(clients.kafka_config({"group.id": "g", "log_level": 0})).close()
    AdminClient(clients.kafka_config({"log_level": 0}))
    with pytest.raises(Exception, match="Unsupported SASL mechanism"):  # librdkafka checks what it is given
        Producer(clients.kafka_config({"sasl.mechanism": "NOPE", "log_level": 0}))


def test_login_and_password_fill_the_sasl_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KAFKA_ENV, f"kafka://covidflow:{quote(SECRET, safe='')}@k1.example:9092"
                                  "?security.protocol=SASL_PLAINTEXT&sasl.mechanisms=PLAIN")  # fmt: skip
    config = clients.kafka_config()
    assert config == {"bootstrap.servers": "k1.example:9092", "security.protocol": "SASL_PLAINTEXT",
                      "sasl.mechanisms": "PLAIN", "sasl.username": "covidflow", "sasl.password": SECRET}  # fmt: skip
    assert SECRET not in repr(config)


def test_credentials_without_a_sasl_protocol_are_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """librdkafka would silently not send them (plaintext is its default protocol)."""
    monkeypatch.setenv(KAFKA_ENV, json.dumps({"conn_type": "kafka", "login": "u", "password": SECRET,
                                              "extra": {"bootstrap.servers": "k:9092"}}))  # fmt: skip
    with pytest.raises(ValueError, match=r"security\.protocol") as err:
        clients.kafka_config()
    assert SECRET not in str(err.value)


def test_callbacks_as_import_paths_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    extra = {"bootstrap.servers": "k:9092", "error_cb": "os.system"}
    monkeypatch.setenv(KAFKA_ENV, json.dumps({"conn_type": "kafka", "extra": extra}))
    with pytest.raises(ValueError, match="error_cb"):
        clients.kafka_config()


@pytest.mark.parametrize(
    ("mechanism", "module"),
    [
        ("PLAIN", "org.apache.kafka.common.security.plain.PlainLoginModule"),
        ("SCRAM-SHA-512", "org.apache.kafka.common.security.scram.ScramLoginModule"),
    ],
)
def test_spark_options_carry_the_same_credentials_as_jaas(
    monkeypatch: pytest.MonkeyPatch, mechanism: str, module: str
) -> None:
    monkeypatch.setenv(
        KAFKA_ENV, json.dumps({"conn_type": "kafka", "extra": _sasl_extra(**{"sasl.mechanism": mechanism})})
    )
    options = clients.kafka_spark_options()
    escaped = SECRET.replace("\\", "\\\\").replace('"', '\\"')
    assert options == {
        "kafka.bootstrap.servers": "b1.example:9093,b2.example:9093",
        "kafka.security.protocol": "SASL_SSL",
        "kafka.sasl.mechanism": mechanism,
        "kafka.sasl.jaas.config": f'{module} required username="covidflow" password="{escaped}";',
    }
    assert SECRET not in repr(options) and escaped not in repr(options)


def test_spark_options_refuse_a_mechanism_without_a_password_login_module(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        KAFKA_ENV, json.dumps({"conn_type": "kafka", "extra": _sasl_extra(**{"sasl.mechanism": "GSSAPI"})})
    )
    with pytest.raises(ValueError, match="GSSAPI"):
        clients.kafka_spark_options()


def test_executor_env_forwards_only_connections_with_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    kafka = json.dumps({"conn_type": "kafka", "extra": _sasl_extra()})
    monkeypatch.setenv(KAFKA_ENV, kafka)
    monkeypatch.setenv(CASS_ENV, json.dumps({"conn_type": "cassandra", "host": "c", "port": 9042}))
    es = f"elasticsearch://elastic:{quote(SECRET, safe='')}@es:9200"
    monkeypatch.setenv(ES_ENV, es)
    conf = clients.executor_env_conf()
    assert conf == {
        "spark.executorEnv.COVIDFLOW_SECRET_CONN_COVIDFLOW_KAFKA": kafka,
        "spark.executorEnv.COVIDFLOW_SECRET_CONN_COVIDFLOW_ELASTICSEARCH": es,
    }
    # Every key is one Spark's default spark.redaction.regex hides.
    import re

    default_redaction = re.compile(r"(?i)secret|password|token|access[.]key")
    assert all(default_redaction.search(key) for key in conf)


def test_an_executor_reads_the_forwarded_connection_without_airflow() -> None:
    """A Spark executor has no AIRFLOW_CONN_* (the worker's environment), only what the driver forwarded."""
    cassandra = {"conn_type": "cassandra", "host": "c.example", "login": "cf", "password": SECRET}
    forwarded = {
        clients.executor_env_name(settings.CONN_KAFKA): json.dumps({"conn_type": "kafka", "extra": _sasl_extra()}),
        clients.executor_env_name(settings.CONN_CASSANDRA): json.dumps(cassandra),
    }
    code = (
        "import sys, json\n"
        "from covidflow.clients import cassandra_endpoint, kafka_config\n"
        "k, c = kafka_config(), cassandra_endpoint()\n"
        "assert 'airflow' not in sys.modules\n"
        "print(json.dumps([k['sasl.username'], k['sasl.password'], c.hosts[0], c.password]))\n"
    )
    env = {"PATH": "/usr/bin:/bin", **forwarded}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == ["covidflow", SECRET, "c.example", SECRET]


def test_no_other_module_builds_a_kafka_config_by_hand(code_lines_matching) -> None:
    """Every Producer, Consumer and AdminClient config comes from kafka_config (the connections the stack and a test
    of a dead broker define are the exceptions: connections, not client configs)."""
    import re

    pattern = re.compile(r"""["']bootstrap\.servers["']\s*:|\b(Producer|Consumer|AdminClient)\(\s*\{""")
    allowed = {"covidflow/clients.py", "covidflow/stack/connections.py", "tests/integration/test_ops.py",
               "tests/integration/test_kafka_jaas.py"}  # fmt: skip
    assert code_lines_matching(pattern, allowed) == []
