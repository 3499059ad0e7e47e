"""covidflow.clients: address and credentials from the Airflow connection (JSON or URI form), else settings;
the password never shows in repr or logs. No service is contacted (clients are built, not connected)."""

from __future__ import annotations

import json
import logging
from urllib.parse import quote

import pytest

from covidflow import clients, settings

ES_ENV = f"AIRFLOW_CONN_{settings.CONN_ELASTICSEARCH.upper()}"
CASS_ENV = f"AIRFLOW_CONN_{settings.CONN_CASSANDRA.upper()}"
SECRET = "s3cr3t-p@ss/word"
ENCODED = quote(SECRET, safe="")  # URI form: the secret URL-encoded


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (ES_ENV, CASS_ENV, "AIRFLOW__SECRETS__BACKEND"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(clients, "_ES_CLIENTS", {})
    monkeypatch.setattr(clients, "_CASSANDRA_SESSIONS", {})


def _es_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ES_ENV, json.dumps({"conn_type": "elasticsearch", "host": "es.example.org", "port": 9243,
                                           "schema": "https", "login": "elastic", "password": SECRET}))  # fmt: skip


def test_elasticsearch_basic_auth_from_json_connection(monkeypatch: pytest.MonkeyPatch, caplog, capsys) -> None:
    _es_json(monkeypatch)
    with caplog.at_level(logging.DEBUG):
        es = clients.elasticsearch()
    node = es.transport.node_pool.get().config
    assert (node.scheme, node.host, node.port) == ("https", "es.example.org", 9243)
    assert es._headers["authorization"].startswith("Basic ")
    assert clients.elasticsearch() is es  # cached per endpoint and options
    assert clients.elasticsearch(request_timeout=10) is not es
    ep = clients.elasticsearch_endpoint()
    assert ep.origin == f"connection {settings.CONN_ELASTICSEARCH}" and ep.login == "elastic"
    out = capsys.readouterr()
    logged = caplog.text + out.out + out.err  # Airflow's logging config may route ours to stdout
    for text in (repr(ep), str(ep), ep.describe(), *ep.urls, repr(es), logged):
        assert SECRET not in text
    assert "es.example.org:9243" in logged


def test_elasticsearch_uri_connection_with_encoded_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ES_ENV, f"elasticsearch://elastic:{ENCODED}@10.0.0.5:9200?schema=http")
    ep = clients.elasticsearch_endpoint()
    assert (ep.hosts, ep.port, ep.scheme, ep.login, ep.password) == (("10.0.0.5",), 9200, "http", "elastic", SECRET)
    # An explicit url replaces the address only: the credentials stay those of the connection.
    moved = clients.elasticsearch_endpoint("http://127.0.0.1:19200")
    assert (moved.hosts, moved.port, moved.password) == (("127.0.0.1",), 19200, SECRET)


def test_elasticsearch_without_connection_uses_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settings, "ELASTICSEARCH_URL", "http://es-from-settings:9201")
    ep = clients.elasticsearch_endpoint()
    assert (ep.hosts, ep.port, ep.login, ep.origin) == (("es-from-settings",), 9201, None, "settings")
    es = clients.elasticsearch()
    assert "authorization" not in es._headers


def test_cassandra_plain_text_auth_from_connection(monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    from cassandra.auth import PlainTextAuthProvider
    from cassandra.policies import TokenAwarePolicy

    monkeypatch.setenv(CASS_ENV, json.dumps({"conn_type": "cassandra", "host": "10.0.0.1,10.0.0.2",
                                             "port": 9142, "login": "covidflow", "password": SECRET}))  # fmt: skip
    ep = clients.cassandra_endpoint()
    assert (ep.hosts, ep.port, ep.login) == (("10.0.0.1", "10.0.0.2"), 9142, "covidflow")
    cluster = clients.cassandra_cluster(ep)  # built, not connected
    assert isinstance(cluster.auth_provider, PlainTextAuthProvider)
    assert cluster.auth_provider.username == "covidflow" and cluster.auth_provider.password == SECRET
    assert cluster.contact_points == ["10.0.0.1", "10.0.0.2"] and cluster.port == 9142
    assert cluster.protocol_version == clients.CASSANDRA_PROTOCOL_VERSION
    assert isinstance(cluster.load_balancing_policy, TokenAwarePolicy)
    assert clients.cassandra_endpoint(port=19042).password == SECRET  # port override keeps the credentials
    for text in (repr(ep), str(ep), ep.describe()):
        assert SECRET not in text


def test_cassandra_uri_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CASS_ENV, f"cassandra://covidflow:{ENCODED}@10.0.0.7:9042/covidflow")
    ep = clients.cassandra_endpoint()
    assert (ep.hosts, ep.port, ep.login, ep.password) == (("10.0.0.7",), 9042, "covidflow", SECRET)


def test_cassandra_without_connection_uses_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settings, "CASSANDRA_HOST", "10.0.0.9")
    ep = clients.cassandra_endpoint()
    assert (ep.hosts, ep.port, ep.login, ep.origin) == (("10.0.0.9",), settings.CASSANDRA_PORT, None,
                                                        "settings")  # fmt: skip
    assert clients.cassandra_cluster(ep).auth_provider is None


def test_cached_session_is_reused_and_replaced_once_shut_down(monkeypatch: pytest.MonkeyPatch) -> None:
    class Sess:
        def __init__(self) -> None:
            self.is_shutdown = False
            self.cluster = self

    class Cluster:
        def connect(self) -> Sess:
            return Sess()

    monkeypatch.setattr(clients, "cassandra_cluster", lambda ep: Cluster())
    first = clients.cassandra_session()
    assert clients.cassandra_session() is first
    assert clients.cassandra_session(cached=False) is not first
    first.is_shutdown = True
    assert clients.cassandra_session() is not first


def test_a_malformed_connection_is_an_error_not_a_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ES_ENV, json.dumps({"conn_type": "elasticsearch", "host": "h", "schema": "ftp"}))
    with pytest.raises(ValueError, match="http or https"):
        clients.elasticsearch_endpoint()


def test_no_other_module_builds_store_clients(code_lines_matching) -> None:
    """Elasticsearch(...) and Cluster(...) are built in covidflow.clients only, in the code, the benchmarks and the
    integration tests (the test that the local Cassandra refuses strangers is the one exception)."""
    import re

    pattern = re.compile(r"\b(Elasticsearch|Cluster|CassandraHook|ElasticsearchPythonHook|ElasticsearchSQLHook)\(")
    allowed = {"covidflow/clients.py", "tests/integration/test_stack_cassandra.py"}  # clients the node must refuse
    assert code_lines_matching(pattern, allowed) == []


def test_outside_airflow_the_connection_is_read_from_the_environment_without_importing_airflow() -> None:
    """The Spark driver a task starts inherits AIRFLOW_CONN_* and a task environment whose metadata-database URL
    cannot be parsed: importing Airflow there failed the stream at start (CI rehearsal, 2026-11-30)."""
    import subprocess
    import sys

    secret = "pw-" + "x" * 6
    code = (
        "import sys\n"
        "from covidflow.clients import cassandra_endpoint, elasticsearch_endpoint\n"
        "es, cql = elasticsearch_endpoint(), cassandra_endpoint()\n"
        "assert 'airflow' not in sys.modules\n"
        "print(es.urls[0], es.login, es.password, cql.hosts[0], cql.port, cql.login)\n"
    )
    env = {
        "PATH": "/usr/bin:/bin",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "not a url",
        "AIRFLOW_CONN_COVIDFLOW_ELASTICSEARCH": f"http://elastic:{secret}@es.example:9201",
        "AIRFLOW_CONN_COVIDFLOW_CASSANDRA": json.dumps(
            {"conn_type": "cassandra", "host": "cql.example", "port": 9043, "login": "cf", "password": secret}
        ),
    }
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["http://es.example:9201", "elastic", secret, "cql.example", "9043", "cf"]


def test_conn_env_forms() -> None:
    from covidflow.clients import parse_conn_env

    login, password = quote("u@x", safe=""), quote("p/w", safe="")
    uri = parse_conn_env(f"elasticsearch://{login}:{password}@h:9200/https?verify_certs=false")
    assert (uri.host, uri.port, uri.login, uri.password, uri.schema) == ("h", 9200, "u@x", "p/w", "https")
    assert uri.extra_dejson == {"verify_certs": "false"}
    js = parse_conn_env('{"conn_type": "x", "host": "h", "extra": "{\\"a\\": 1}"}')
    assert (js.host, js.port, js.login, js.extra_dejson) == ("h", None, None, {"a": 1})
    assert "p/w" not in repr(uri)
