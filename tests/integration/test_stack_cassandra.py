"""The local stack's Cassandra, over CQL: version, a write/read round trip, virtual tables.

Assumes `covidflow stack up cassandra` ran first; an unreachable node fails the tests (never skips).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from decimal import Decimal

import pytest
from cassandra.cluster import NoHostAvailable, Session

from covidflow import clients
from covidflow.settings import CASSANDRA_HOST, CASSANDRA_PORT

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def session() -> Iterator[Session]:
    cluster = clients.cassandra_cluster(clients.cassandra_endpoint(), connect_timeout=5)
    try:
        sess = cluster.connect()
        sess.default_timeout = 30  # schema changes on 2 cores can take a few seconds
    except NoHostAvailable as exc:
        cluster.shutdown()
        error = exc
    else:
        error = None
    if error is not None:  # outside the except block, so the failure shows only our message
        pytest.fail(
            f"Cassandra is not reachable at {CASSANDRA_HOST}:{CASSANDRA_PORT} ({error}); "
            "start it with `covidflow stack up cassandra`",
            pytrace=False,
        )
    yield sess
    cluster.shutdown()


def test_release_version_is_5_0(session: Session) -> None:
    row = session.execute("SELECT release_version FROM system.local").one()
    assert row.release_version.startswith("5.0"), row.release_version


def test_write_and_read_back_exact_values(session: Session) -> None:
    keyspace = f"cf_it_{uuid.uuid4().hex[:12]}"
    session.execute(
        f"CREATE KEYSPACE {keyspace} WITH replication = {{'class': 'SimpleStrategy', 'replication_factor': 1}}"
    )
    try:
        session.execute(
            f"CREATE TABLE {keyspace}.cases (region text, day date, confirmed bigint, rate double, "
            "deaths_share decimal, updated timestamp, sources list<text>, PRIMARY KEY ((region), day))"
        )
        insert = session.prepare(
            f"INSERT INTO {keyspace}.cases (region, day, confirmed, rate, deaths_share, updated, sources) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)"
        )
        updated = dt.datetime(2020, 3, 1, 12, 30, 15, 123000)  # Cassandra keeps milliseconds
        session.execute(
            insert, ("FR-IDF", dt.date(2020, 3, 1), 9_876_543_210, 0.125, Decimal("0.0213"), updated, ["a", "b"])
        )
        session.execute(insert, ("FR-IDF", dt.date(2020, 3, 2), 7, 1.5, Decimal("0"), updated, []))

        rows = list(session.execute(f"SELECT * FROM {keyspace}.cases WHERE region = %s", ("FR-IDF",)))

        assert [r.day.date() for r in rows] == [dt.date(2020, 3, 1), dt.date(2020, 3, 2)]
        first = rows[0]
        assert first.confirmed == 9_876_543_210
        assert first.rate == 0.125
        assert first.deaths_share == Decimal("0.0213")
        assert first.updated == updated
        assert first.sources == ["a", "b"]
        assert rows[1].confirmed == 7
        assert rows[1].sources is None  # an empty collection is stored as null
    finally:
        session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}")
    gone = session.execute("SELECT keyspace_name FROM system_schema.keyspaces WHERE keyspace_name = %s", (keyspace,))
    assert gone.one() is None


def test_virtual_tables_answer(session: Session) -> None:
    """Maintenance checks (compactions, settings) read system_views; they must exist and answer."""
    tables = {
        r.table_name
        for r in session.execute(
            "SELECT table_name FROM system_virtual_schema.tables WHERE keyspace_name = 'system_views'"
        )
    }
    assert {"sstable_tasks", "settings", "thread_pools"} <= tables

    tasks = session.execute("SELECT * FROM system_views.sstable_tasks")
    assert {"keyspace_name", "table_name", "task_id", "kind", "progress", "total", "unit"} <= set(tasks.column_names)

    num_tokens = session.execute("SELECT value FROM system_views.settings WHERE name = 'num_tokens'").one()
    assert num_tokens.value == "4"  # the value our generated cassandra.yaml sets


def test_only_the_covidflow_role_logs_in(session: Session) -> None:
    """PasswordAuthenticator: no login without credentials, none as the default superuser, which is disabled."""
    from cassandra.auth import PlainTextAuthProvider
    from cassandra.cluster import Cluster

    from covidflow.stack.services.cassandra import DEFAULT_ROLE

    mine = {r.username for r in session.execute("SELECT username FROM system_views.clients")}
    assert mine == {"covidflow"}
    roles = {r.role: (r.can_login, r.is_superuser) for r in session.execute("SELECT * FROM system_auth.roles")}
    assert roles[DEFAULT_ROLE] == (False, False)
    assert roles["covidflow"] == (True, True)
    for auth in (None, PlainTextAuthProvider(DEFAULT_ROLE, DEFAULT_ROLE)):
        # Built by hand on purpose: a client the node must refuse (test_clients.py allows this file).
        stranger = Cluster([CASSANDRA_HOST], port=CASSANDRA_PORT, auth_provider=auth, connect_timeout=5)
        try:
            with pytest.raises(NoHostAvailable, match=r"AuthenticationFailed|Bad credentials|requires authentication"):
                stranger.connect()
        finally:
            stranger.shutdown()
