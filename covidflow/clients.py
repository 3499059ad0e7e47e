"""One factory per service: the only place an Elasticsearch client, a Cassandra session or a Kafka config is built.

Every component gets its clients here: the stream's driver and executors, the ops, purge and maintenance tasks,
the maintenance DAGs, ``covidflow query``, the demo and the dashboard. The module sits at the package root beside
``settings`` and imports nothing else from covidflow, so it is below every room (land → read → publish → normalise
→ store → index → show, over catalog/) and any of them may use it.

Where the address and the credentials come from, one rule for all:

1. **The Airflow connection** (``settings.CONN_ELASTICSEARCH``, ``settings.CONN_CASSANDRA``,
   ``settings.CONN_KAFKA``): in an Airflow process
   (a task, the api-server, the dag-processor: Airflow is already imported) through Airflow's own lookup
   (``airflow.sdk.BaseHook.get_connection``: environment, secrets backends, metadata database); in any other
   process (the Spark driver a task starts, the CLI) from ``AIRFLOW_CONN_<ID>`` only, JSON or URI form, parsed
   here without importing Airflow (seconds of start-up, and under a task it fails on the task's environment).
   Login and password become Elasticsearch basic auth and Cassandra's ``PlainTextAuthProvider``; Kafka's
   connection extra is a confluent-kafka config dict (the apache-kafka provider's convention), SASL included.
   A Spark executor reads the connections that carry credentials from ``COVIDFLOW_SECRET_CONN_<ID>``, which the
   driver puts in its own SparkConf at runtime (``executor_env_conf``), never on a command line.
2. **Otherwise covidflow.settings** (the Spark executors, the CLI outside Airflow): Airflow is not even imported.

Explicit ``url`` / ``host`` / ``port`` arguments replace the address only (the stream's and the tests' forwarders);
credentials still come from the connection. A connection that exists but cannot be read is an error, never a
silent fall-back.

The providers' hooks are not used to build the clients: ``ElasticsearchPythonHook.get_conn`` is
``Elasticsearch(hosts, **args)`` (plus a header shim that is off unless ``[elasticsearch] es_compat_with`` is set),
and ``CassandraHook`` builds a ``Cluster`` from the connection without the writer's options (token-aware round
robin, protocol v5, fast reconnection) and needs Airflow, which the executors and the CLI do not have. Using them
inside Airflow only would make two code paths; the hooks' own connection lookup (``BaseHook.get_connection``) is
what is used here.

Secrets: ``Endpoint`` keeps the password out of its repr, ``KafkaConfig`` its secret values, logs name hosts and
ports only, and no URL with credentials is ever built.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import unquote, urlsplit

from covidflow import settings

log = logging.getLogger(__name__)

#: Cassandra native protocol of every session (Cassandra 4+; 5 carries the writer's larger batches unsplit).
CASSANDRA_PROTOCOL_VERSION = 5
_ES_LOCK, _CASSANDRA_LOCK = threading.Lock(), threading.Lock()
_ES_CLIENTS: dict[tuple[Any, ...], Any] = {}
_CASSANDRA_SESSIONS: dict[tuple[Any, ...], Any] = {}


@dataclass(frozen=True)
class Endpoint:
    """Where a service is and how to log in; the password never shows in repr, str or logs."""

    hosts: tuple[str, ...]
    port: int
    scheme: str = "http"
    login: str | None = None
    password: str | None = field(default=None, repr=False)
    origin: str = "settings"

    @property
    def urls(self) -> list[str]:
        """``scheme://host:port`` per host, never with credentials."""
        return [f"{self.scheme}://{host}:{self.port}" for host in self.hosts]

    def describe(self) -> str:
        auth = "with credentials" if self.login else "without credentials"
        return f"{','.join(self.hosts)}:{self.port} ({auth}, from {self.origin})"


@dataclass(frozen=True)
class _EnvConnection:
    """The fields of an ``AIRFLOW_CONN_<ID>`` variable that the factories read, parsed without importing Airflow."""

    host: str | None
    port: int | None
    login: str | None
    password: str | None = field(repr=False)
    schema: str | None
    extra_dejson: dict[str, Any]


def parse_conn_env(value: str) -> _EnvConnection:
    """An ``AIRFLOW_CONN_*`` value, JSON or URI form (conn type as the scheme, then login, password, host, port,
    schema as the path and the extras as the query, Airflow's URI layout)."""
    import json
    from urllib.parse import parse_qsl

    text = value.strip()
    if text.startswith("{"):
        raw = json.loads(text)
        extra = raw.get("extra") or {}
        extra = json.loads(extra) if isinstance(extra, str) else dict(extra)
        port = raw.get("port")
        return _EnvConnection(raw.get("host"), int(port) if port not in (None, "") else None, raw.get("login"),
                              raw.get("password"), raw.get("schema"), extra)  # fmt: skip
    parts = urlsplit(text)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    extra = json.loads(query.pop("__extra__")) if "__extra__" in query else query
    return _EnvConnection(unquote(parts.hostname or "") or None, parts.port,
                          unquote(parts.username) if parts.username else None,
                          unquote(parts.password) if parts.password else None,
                          unquote(parts.path.lstrip("/")) or None, extra)  # fmt: skip


def airflow_connection(conn_id: str) -> Any | None:
    """The Airflow connection ``conn_id``, or None when there is none.

    In an Airflow process (a task, the api-server: Airflow already imported) Airflow's own lookup is used, secrets
    backends included. Anywhere else (the Spark driver a task starts, the CLI) only ``AIRFLOW_CONN_<ID>`` is read
    (on a Spark executor ``COVIDFLOW_SECRET_CONN_<ID>``, see ``executor_env_conf``), parsed here: importing Airflow
    there costs seconds, and under a task it fails (the task's environment carries no usable metadata-database URL).
    """
    if "airflow" not in sys.modules:
        value = os.environ.get(f"AIRFLOW_CONN_{conn_id.upper()}") or os.environ.get(executor_env_name(conn_id))
        return parse_conn_env(value) if value else None
    from airflow.sdk import BaseHook

    try:
        return BaseHook.get_connection(conn_id)
    except Exception as exc:
        if type(exc).__name__ != "AirflowNotFoundException":
            raise
        log.info("connection %s is not defined; using covidflow.settings", conn_id)
        return None


def _hosts(value: str) -> tuple[str, ...]:
    return tuple(h.strip() for h in value.split(",") if h.strip())


def _with_address(base: Endpoint, url: str | None, host: str | None, port: int | None) -> Endpoint:
    if url:
        parts = urlsplit(url)
        base = replace(base, hosts=(parts.hostname or settings.HOST,), port=parts.port or base.port,
                       scheme=parts.scheme or base.scheme)  # fmt: skip
        if parts.username:
            base = replace(base, login=unquote(parts.username), password=unquote(parts.password or ""))
    if host:
        base = replace(base, hosts=_hosts(host))
    if port:
        base = replace(base, port=int(port))
    return base


def elasticsearch_endpoint(url: str | None = None, *, conn_id: str = settings.CONN_ELASTICSEARCH) -> Endpoint:
    """Elasticsearch's address and credentials: the connection, else ``settings.ELASTICSEARCH_URL``."""
    conn = airflow_connection(conn_id)
    if conn is not None:
        extra = conn.extra_dejson or {}
        scheme = conn.schema or extra.get("scheme") or extra.get("schema") or "http"
        if scheme not in ("http", "https"):
            raise ValueError(f"connection {conn_id}: scheme must be http or https, not {scheme!r}")
        host = conn.host or settings.HOST
        if "://" in host:  # a host given as a URL
            base = _with_address(Endpoint(("",), settings.ELASTICSEARCH_PORT), host, None, None)
            hosts, scheme = base.hosts, base.scheme
        else:
            hosts = _hosts(host)
        ep = Endpoint(hosts, int(conn.port or settings.ELASTICSEARCH_PORT), scheme, conn.login or None,
                      conn.password or None, f"connection {conn_id}")  # fmt: skip
    else:
        ep = _with_address(Endpoint((settings.HOST,), settings.ELASTICSEARCH_PORT), settings.ELASTICSEARCH_URL,
                           None, None)  # fmt: skip
    return _with_address(ep, url, None, None)


def cassandra_endpoint(
    host: str | None = None, port: int | None = None, *, conn_id: str = settings.CONN_CASSANDRA
) -> Endpoint:
    """Cassandra's contact points, port and credentials: the connection, else ``settings.CASSANDRA_HOST``."""
    conn = airflow_connection(conn_id)
    if conn is not None:
        ep = Endpoint(_hosts(conn.host or settings.CASSANDRA_HOST), int(conn.port or settings.CASSANDRA_PORT),
                      "cql", conn.login or None, conn.password or None, f"connection {conn_id}")  # fmt: skip
    else:
        ep = Endpoint(_hosts(settings.CASSANDRA_HOST), settings.CASSANDRA_PORT, "cql")
    return _with_address(ep, None, host, port)


def elasticsearch(
    url: str | None = None,
    *,
    conn_id: str = settings.CONN_ELASTICSEARCH,
    request_timeout: float = 60,
    max_retries: int = 3,
    retry_on_timeout: bool = True,
    cached: bool = True,
) -> Any:
    """An Elasticsearch client, cached per endpoint and options (the stream's writers reuse theirs).

    Never ping() or info() it: the local minimal distribution answers 405 on ``GET /``.
    """
    ep = elasticsearch_endpoint(url, conn_id=conn_id)
    key = (ep, request_timeout, max_retries, retry_on_timeout)
    with _ES_LOCK:
        if cached and key in _ES_CLIENTS:
            return _ES_CLIENTS[key]
        from elasticsearch import Elasticsearch

        args: dict[str, Any] = {
            "request_timeout": request_timeout,
            "max_retries": max_retries,
            "retry_on_timeout": retry_on_timeout,
        }
        if ep.login:
            args["basic_auth"] = (ep.login, ep.password or "")
        es = Elasticsearch(ep.urls, **args)
        log.info("Elasticsearch client for %s", ep.describe())
        if cached:
            _ES_CLIENTS[key] = es
        return es


def cassandra_cluster(ep: Endpoint, *, connect_timeout: float = 10) -> Any:
    """A cassandra-driver Cluster for ``ep`` (not connected).

    Token-aware: a single-partition batch goes straight to a replica of its partition, with no coordinator hop
    on a multi-node cluster. Reconnects within seconds after an outage (the default backs off to 10 minutes).
    """
    from cassandra.auth import PlainTextAuthProvider
    from cassandra.cluster import Cluster
    from cassandra.policies import ExponentialReconnectionPolicy, RoundRobinPolicy, TokenAwarePolicy

    auth = PlainTextAuthProvider(username=ep.login, password=ep.password or "") if ep.login else None
    return Cluster(
        list(ep.hosts),
        port=ep.port,
        auth_provider=auth,
        load_balancing_policy=TokenAwarePolicy(RoundRobinPolicy()),
        protocol_version=CASSANDRA_PROTOCOL_VERSION,
        reconnection_policy=ExponentialReconnectionPolicy(1.0, 10.0),
        connect_timeout=connect_timeout,
    )


def cassandra_session(
    host: str | None = None,
    port: int | None = None,
    *,
    conn_id: str = settings.CONN_CASSANDRA,
    cached: bool = True,
) -> Any:
    """A connected cassandra-driver session (no keyspace), cached per endpoint: a Cluster costs ~1 s to build.

    With ``cached=False`` the caller owns the session and shuts its cluster down (``sess.cluster.shutdown()``);
    a cached session someone shut down is replaced on the next call.
    """
    ep = cassandra_endpoint(host, port, conn_id=conn_id)
    key = (ep,)
    with _CASSANDRA_LOCK:
        sess = _CASSANDRA_SESSIONS.get(key) if cached else None
        if sess is not None and not sess.is_shutdown and not sess.cluster.is_shutdown:
            return sess
        sess = cassandra_cluster(ep).connect()
        log.info("Cassandra session for %s", ep.describe())
        if cached:
            _CASSANDRA_SESSIONS[key] = sess
        return sess


# --- Kafka ------------------------------------------------------------------------------------------------------

#: Config keys whose values are secrets (sasl.password, ssl.key.password, sasl.jaas.config, oauth client secrets).
SECRET_KEY_PATTERN = re.compile(r"(?i)password|secret|token|jaas")
#: librdkafka callbacks: the provider's hooks import them from dotted paths (behind an allow-list); we do not.
_KAFKA_CALLBACKS = ("error_cb", "throttle_cb", "stats_cb", "log_cb", "oauth_cb", "on_commit")
#: The JVM Kafka client's login module per SASL mechanism (the Spark Kafka source takes ``kafka.sasl.jaas.config``).
_JAAS_LOGIN_MODULES = {
    "PLAIN": "org.apache.kafka.common.security.plain.PlainLoginModule",
    "SCRAM-SHA-256": "org.apache.kafka.common.security.scram.ScramLoginModule",
    "SCRAM-SHA-512": "org.apache.kafka.common.security.scram.ScramLoginModule",
}


class KafkaConfig(dict[str, Any]):
    """A confluent-kafka config dict (or Spark's ``kafka.*`` options): a plain dict for the clients, whose repr and
    str hide every secret value, so a config that reaches a log or a traceback shows no password."""

    def __repr__(self) -> str:
        shown = {k: "***" if SECRET_KEY_PATTERN.search(str(k)) and v else v for k, v in self.items()}
        return f"KafkaConfig({shown!r})"

    __str__ = __repr__

    @property
    def has_credentials(self) -> bool:
        return any(self.get(k) for k in ("sasl.username", "sasl.password", "kafka.sasl.jaas.config"))

    def describe(self) -> str:
        servers = self.get("bootstrap.servers") or self.get("kafka.bootstrap.servers")
        protocol = self.get("security.protocol") or self.get("kafka.security.protocol") or "PLAINTEXT"
        auth = "with credentials" if self.has_credentials else "without credentials"
        return f"{servers} ({protocol}, {auth})"


def kafka_config(
    overrides: Mapping[str, Any] | None = None,
    *,
    bootstrap: str | None = None,
    conn_id: str = settings.CONN_KAFKA,
) -> KafkaConfig:
    """The confluent-kafka config of every Producer, Consumer and AdminClient: the connection's, plus ``overrides``
    (the caller's client settings: group id, idempotence...).

    The connection's extra is a confluent config dict, as the apache-kafka provider's hooks read it, so SASL settings
    (``security.protocol``, ``sasl.mechanism``, ``sasl.username``, ``sasl.password``) work the same through both;
    the connection's login and password fill ``sasl.username`` / ``sasl.password`` when the extra has none. Without
    a connection: ``settings.KAFKA_BOOTSTRAP`` and nothing else (the local stack has no authentication). An explicit
    ``bootstrap`` replaces the address only; the credentials stay the connection's.
    """
    conn = airflow_connection(conn_id)
    if conn is None:
        config: dict[str, Any] = {"bootstrap.servers": settings.KAFKA_BOOTSTRAP}
    else:
        extra = dict(conn.extra_dejson or {})
        callbacks = [k for k in _KAFKA_CALLBACKS if isinstance(extra.get(k), str)]
        if callbacks:
            raise ValueError(f"connection {conn_id}: callback(s) {', '.join(callbacks)} given as import paths are "
                             "resolved by the provider's hooks only; covidflow's clients take none")  # fmt: skip
        servers = extra.get("bootstrap.servers")
        if not servers and conn.host:
            servers = ",".join(f"{h}:{conn.port}" if conn.port else h for h in _hosts(conn.host))
        config = {**extra, "bootstrap.servers": servers or settings.KAFKA_BOOTSTRAP}
        if conn.login and not extra.get("sasl.username"):
            config["sasl.username"] = conn.login
        if conn.password and not extra.get("sasl.password"):
            config["sasl.password"] = conn.password
        if config.get("sasl.username") or config.get("sasl.password"):
            protocol = str(config.get("security.protocol") or "").upper()
            mechanism = config.get("sasl.mechanism") or config.get("sasl.mechanisms")
            if not protocol.startswith("SASL_") or not mechanism:
                raise ValueError(f"connection {conn_id} has SASL credentials: its extra must name security.protocol "
                                 "(SASL_SSL or SASL_PLAINTEXT) and sasl.mechanism (PLAIN, SCRAM-SHA-256 or "
                                 "SCRAM-SHA-512), or the credentials would never be sent")  # fmt: skip
    if bootstrap:
        config["bootstrap.servers"] = bootstrap
    config.update(overrides or {})
    return KafkaConfig(config)


def jaas_quoted(value: str) -> str:
    """A JAAS option value in double quotes (Kafka's parser reads backslash escapes inside them)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def kafka_spark_options(config: Mapping[str, Any] | None = None) -> KafkaConfig:
    """The Spark Kafka source's ``kafka.*`` options equivalent to a confluent config (default: ``kafka_config()``).

    The source runs the JVM client, which takes the credentials as one ``sasl.jaas.config`` line: security protocol,
    mechanism and JAAS are set only when the config has them (the local stack's options stay the bootstrap servers).
    The options travel in the query plan, never on a command line; Spark's Kafka connector redacts the JAAS password
    where it logs parameters (``KafkaRedactionUtil``).
    """
    config = kafka_config() if config is None else config
    options: dict[str, Any] = {"kafka.bootstrap.servers": config["bootstrap.servers"]}
    if config.get("security.protocol"):
        options["kafka.security.protocol"] = str(config["security.protocol"]).upper()
    username, password = config.get("sasl.username"), config.get("sasl.password")
    if username or password:
        mechanism = str(config.get("sasl.mechanism") or config.get("sasl.mechanisms") or "").upper()
        module = _JAAS_LOGIN_MODULES.get(mechanism)
        if module is None:
            raise ValueError(f"SASL mechanism {mechanism or '(none)'} has no username/password login module for "
                             f"Spark's Kafka source; use one of {', '.join(_JAAS_LOGIN_MODULES)}")  # fmt: skip
        options["kafka.sasl.mechanism"] = mechanism
        user, secret = jaas_quoted(str(username or "")), jaas_quoted(str(password or ""))
        options["kafka.sasl.jaas.config"] = f"{module} required username={user} password={secret};"
    return KafkaConfig(options)


# --- Credentials for Spark executors ----------------------------------------------------------------------------

#: The connections the stream's executors use (the producer of dead letters, the Cassandra and Elasticsearch writers).
STREAM_CONNECTIONS = (settings.CONN_KAFKA, settings.CONN_CASSANDRA, settings.CONN_ELASTICSEARCH)


def executor_env_name(conn_id: str) -> str:
    """Environment variable through which a Spark executor gets connection ``conn_id``.

    Its name contains SECRET, which Spark's default ``spark.redaction.regex`` ((?i)secret|password|token|...)
    matches: the ``spark.executorEnv.<name>`` entry carrying it is redacted in the UI's environment page and in the
    event log (Spark redacts a property whose key or value matches).
    """
    return f"COVIDFLOW_SECRET_CONN_{conn_id.upper()}"


def _has_credentials(conn: _EnvConnection) -> bool:
    return bool(conn.login or conn.password or any(SECRET_KEY_PATTERN.search(str(k)) for k in conn.extra_dejson or {}))


def executor_env_conf(conn_ids: Iterable[str] = STREAM_CONNECTIONS) -> dict[str, str]:
    """``spark.executorEnv.*`` entries that hand the executors the connections carrying credentials, for the driver
    to set in its own SparkConf at runtime (``SparkSession.builder.config``), so no secret is ever on the
    spark-submit command line or in ``ps``.

    Read from this process's environment (the driver inherits the submit task's ``AIRFLOW_CONN_*``). A connection
    without credentials is not forwarded: its executors keep using covidflow.settings, as on the local stack.
    """
    conf: dict[str, str] = {}
    for conn_id in conn_ids:
        value = os.environ.get(f"AIRFLOW_CONN_{conn_id.upper()}") or os.environ.get(executor_env_name(conn_id))
        if value and _has_credentials(parse_conn_env(value)):
            conf[f"spark.executorEnv.{executor_env_name(conn_id)}"] = value
    return conf
