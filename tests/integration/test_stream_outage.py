"""Store outage: Cassandra and Elasticsearch unreachable for a minute; the stream stalls, retries, catches up.

The shared Cassandra and Elasticsearch must stay up for the other engineers' work, so the outage is made
real for this job only: a private streaming job talks to both stores through TCP forwarders that this test
closes (refusing and cutting every connection) and reopens. No mocks: real stores, real job, real network.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fault_matrix import assert_clean
from test_e2e import _producer, _require_services, cassandra_by_vintage, es_by_vintage, expected_records

from covidflow import settings
from covidflow.catalog.specs import find_spec
from covidflow.clients import kafka_config
from covidflow.normalise.replay import publish_file
from covidflow.normalise.supervise import build_bundle, fetch_master_status, spark_submit_command
from covidflow.stack.home import StackHome
from covidflow.stack.services.spark import kafka_connector_jars, spark_env

pytestmark = [pytest.mark.integration, pytest.mark.e2e]
OUTAGE_SECONDS = 60


class Forwarder:
    """127.0.0.1:<port> -> target; ``down()`` closes the listener and every open connection."""

    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.conns: list[socket.socket] = []
        self.listener: socket.socket | None = None

    def up(self) -> None:
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        for _ in range(30):  # the old listener's accept thread may take a moment to let go of the port
            try:
                self.listener.bind(("127.0.0.1", self.port))
                break
            except OSError:
                time.sleep(1)
        self.listener.listen(64)
        threading.Thread(target=self._accept, args=(self.listener,), daemon=True).start()

    def down(self) -> None:
        if self.listener:
            with contextlib.suppress(OSError):
                self.listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
            self.listener.close()
            self.listener = None
        for c in self.conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
            c.close()
        self.conns.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)


@pytest.mark.parametrize("store", ["cassandra", "elasticsearch"])
def test_stream_stalls_during_store_outage_and_catches_up(tmp_path: Path, store: str) -> None:
    """One store unreachable for a minute (a row of the fault matrix each): nothing is committed meanwhile, then
    the job catches up with no loss and no duplicate in either store."""
    _require_services()
    cass, es = Forwarder(settings.CASSANDRA_PORT), Forwarder(settings.ELASTICSEARCH_PORT)
    cass.up()
    es.up()
    broken = cass if store == "cassandra" else es
    tag = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    raw_topic = f"covid.raw.outage.{tag}"
    home = StackHome.from_env()
    env = {
        **os.environ,
        **spark_env(home),
        "COVIDFLOW_STREAM_STATE_DIR": str(tmp_path),
        "COVIDFLOW_STREAM_RAW_TOPIC": raw_topic,
        "COVIDFLOW_STREAM_DEADLETTER_TOPIC": f"covid.deadletter.outage.{tag}",
        "COVIDFLOW_STREAM_TRIGGER_SECONDS": "2",
        "COVIDFLOW_STREAM_CASSANDRA_PORT": str(cass.port),
        "COVIDFLOW_ELASTICSEARCH_URL": f"http://127.0.0.1:{es.port}",
    }
    from confluent_kafka.admin import AdminClient

    from covidflow.publish.topics import ensure_topics

    private = {raw_topic: {"partitions": 2, "replication_factor": 1},
               env["COVIDFLOW_STREAM_DEADLETTER_TOPIC"]: {"partitions": 2, "replication_factor": 1}}  # fmt: skip
    ensure_topics(AdminClient(kafka_config()), private)  # the job never creates them
    master = settings.SPARK_MASTER if fetch_master_status() else "local[2]"
    job_args = ["--app-name", "covidflow-normalise-outage"]
    cmd = spark_submit_command(master, job_args, bundle=build_bundle(tmp_path / "b.zip"), jars=kafka_connector_jars())
    job = subprocess.Popen(cmd, env=env, stdout=(tmp_path / "job.log").open("w"), stderr=subprocess.STDOUT)
    beat = tmp_path / "heartbeat.json"

    def totals() -> dict:
        try:
            return json.loads(beat.read_text())["totals"]
        except (OSError, ValueError, KeyError):
            return {}

    def wait(what: str, check, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            assert job.poll() is None, f"job exited {job.returncode}: {(tmp_path / 'job.log').read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(1)

    try:
        wait("the job to start", lambda: beat.exists(), 180)
        spf = find_spec("spf_donnees_hospitalieres")
        who = find_spec("who_covid19_global_weekly")
        v1 = datetime.now(UTC).replace(microsecond=0)
        before = expected_records([(who.id, who.sample_path)], v1)
        publish_file(_producer(), who, who.sample_path, vintage=v1, topic=raw_topic)
        wait("the first file", lambda: totals().get("records", 0) >= len(before), 300)

        broken.down()
        v2 = v1 + timedelta(seconds=1)
        during = expected_records([(spf.id, spf.sample_path)], v2)
        publish_file(_producer(), spf, spf.sample_path, vintage=v2, topic=raw_topic)
        time.sleep(OUTAGE_SECONDS)
        assert job.poll() is None, "the job died during the outage instead of stalling"
        assert totals().get("records", 0) == len(before), "a batch was committed while the stores were down"
        if store == "elasticsearch":
            assert es_by_vintage(during) == {}  # nothing reached Elasticsearch

        broken.up()
        wait("catch-up", lambda: totals().get("records", 0) >= len(before) + len(during), 900)
        for expected in (before, during):
            want = {rid: r["value"] for rid, r in expected.items()}
            assert cassandra_by_vintage(expected) == want
            assert es_by_vintage(expected) == want
        assert_clean(f"{store.capitalize()} down for {OUTAGE_SECONDS} s", {**before, **during})
    finally:
        job.terminate()
        job.wait(60)
        cass.down()
        es.down()
        from confluent_kafka.admin import AdminClient

        AdminClient(kafka_config()).delete_topics([raw_topic, env["COVIDFLOW_STREAM_DEADLETTER_TOPIC"]])
