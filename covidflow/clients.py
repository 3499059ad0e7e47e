"""One factory per store service: the only place an Elasticsearch client or a Cassandra session is built.

Every component gets its clients here: the stream's driver and executors, the ops, purge and maintenance tasks,
the maintenance DAGs, ``covidflow query``, the demo and the dashboard. The module sits at the package root beside
``settings`` and imports nothing else from covidflow, so it is below every room (land → read → publish → normalise
→ store → index → show, over catalog/) and any of them may use it.

Where the address and the credentials come from, one rule for all:

1. **The Airflow connection** (``settings.CONN_ELASTICSEARCH``, ``settings.CONN_CASSANDRA``): in an Airflow process
   (a task, the api-server, the dag-processor: Airflow is already imported) through Airflow's own lookup
   (``airflow.sdk.BaseHook.get_connection``: environment, secrets backends, metadata database); in any other
   process (the Spark driver a task starts, the CLI) from ``AIRFLOW_CONN_<ID>`` only, JSON or URI form, parsed
   here without importing Airflow (seconds of start-up, and under a task it fails on the task's environment).
   Login and password become Elasticsearch basic auth and Cassandra's ``PlainTextAuthProvider``.
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

Secrets: ``Endpoint`` keeps the password out of its repr, logs name hosts and ports only, and no URL with
credentials is ever built.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
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
    backends included. Anywhere else (the Spark driver a task starts, the CLI) only ``AIRFLOW_CONN_<ID>`` is read,
    parsed here: importing Airflow there costs seconds, and under a task it fails (the task's environment carries
    no usable metadata-database URL).
    """
    if "airflow" not in sys.modules:
        value = os.environ.get(f"AIRFLOW_CONN_{conn_id.upper()}")
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
