"""The generated Cassandra and Elasticsearch configuration: loopback only, our directories, valid syntax."""

from __future__ import annotations

import socket
import struct
import threading
from pathlib import Path

import yaml

from covidflow.stack.home import StackHome
from covidflow.stack.services.cassandra import (
    CASSANDRA_YAML,
    STORAGE_PORT,
    CassandraService,
    _auth_failed,
    _quote,
    native_transport_answers,
)
from covidflow.stack.services.elasticsearch import ElasticsearchService, elasticsearch_yml


def test_cassandra_yaml_is_single_node_on_loopback(tmp_path: Path) -> None:
    conf = yaml.safe_load(CASSANDRA_YAML.format(host="127.0.0.1", port=9042, storage_port=STORAGE_PORT, data=tmp_path))
    assert conf["listen_address"] == conf["rpc_address"] == "127.0.0.1"
    assert conf["seed_provider"][0]["parameters"][0]["seeds"] == "127.0.0.1:7000"
    assert conf["native_transport_port"] == 9042
    assert (conf["authenticator"], conf["authorizer"]) == ("PasswordAuthenticator", "CassandraAuthorizer")
    assert conf["data_file_directories"] == [f"{tmp_path}/data"]
    assert {conf["commitlog_directory"], conf["hints_directory"], conf["saved_caches_directory"]} == {
        f"{tmp_path}/commitlog",
        f"{tmp_path}/hints",
        f"{tmp_path}/saved_caches",
    }


def test_cassandra_jvm_args_carry_heap_agent_and_jpms_flags(tmp_path: Path) -> None:
    home = StackHome(tmp_path)
    service = CassandraService()
    jars = [tmp_path / "cassandra-all-5.0.9.jar", tmp_path / "jamm-0.4.0.jar"]
    args = service.jvm_args(home, jars)
    assert args[-1] == "org.apache.cassandra.service.CassandraDaemon"
    assert f"-Xmx{service.heap}" in args
    assert f"-javaagent:{tmp_path / 'jamm-0.4.0.jar'}" in args
    assert "--add-opens=java.base/sun.nio.ch=ALL-UNNAMED" in args
    assert "-Dcassandra-foreground=yes" in args
    assert args[args.index("-cp") + 1] == ":".join(map(str, jars))


def test_argfile_quoting() -> None:
    assert _quote('a "b" c\\d') == '"a \\"b\\" c\\\\d"'


def test_elasticsearch_yml_is_single_node_with_security(tmp_path: Path) -> None:
    conf = yaml.safe_load(elasticsearch_yml(tmp_path, 9200))
    assert conf["discovery.type"] == "single-node"
    assert conf["network.host"] == "127.0.0.1"
    assert (conf["http.port"], conf["transport.port"]) == (9200, 9300)
    assert conf["xpack.security.enabled"] is True
    # TLS off on both layers: Elasticsearch allows it for a single node, which listens on loopback only.
    assert conf["xpack.security.http.ssl.enabled"] is conf["xpack.security.transport.ssl.enabled"] is False
    assert conf["cluster.routing.allocation.disk.threshold_enabled"] is False
    assert conf["path.data"] == str(tmp_path / "data")


def test_elasticsearch_process_points_at_our_config(tmp_path: Path) -> None:
    home = StackHome(tmp_path)
    (proc,) = ElasticsearchService().processes(home)
    assert proc.env["ES_PATH_CONF"] == str(tmp_path / "conf" / "elasticsearch")
    assert proc.argv[0].endswith("/bin/elasticsearch")


def test_the_file_realm_holds_covidflow_as_superuser_with_a_pbkdf2_hash() -> None:
    import base64
    import hashlib

    from covidflow.stack.services.elasticsearch import users_files

    files = users_files("pa$$:word")
    assert files["users_roles"] == "superuser:covidflow\n"
    user, hashed = files["users"].rstrip("\n").split(":", 1)
    prefix, salt, key = hashed.split("$")
    assert (user, prefix) == ("covidflow", "{PBKDF2}10000")
    # What Elasticsearch's PBKDF2 hasher checks (checked once against the 8.19 jar's Hasher.verifyHash).
    expected = hashlib.pbkdf2_hmac("sha512", b"pa$$:word", base64.b64decode(salt), 10_000, 32)
    assert base64.b64decode(key) == expected and len(base64.b64decode(salt)) == 32
    assert users_files("pa$$:word")["users"] != files["users"]  # a new salt each time


def _one_shot_server(answer: bytes) -> int:
    """A loopback port that reads one request and sends ``answer`` back; returns the port."""
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        with server:
            conn, _ = server.accept()
            with conn:
                conn.recv(9)
                conn.sendall(answer)

    threading.Thread(target=serve, daemon=True).start()
    return server.getsockname()[1]


def test_native_transport_answers_only_a_cql_supported_frame() -> None:
    supported = struct.pack(">BBhBI", 0x84, 0, 0, 0x06, 0)
    assert native_transport_answers("127.0.0.1", _one_shot_server(supported), timeout=2.0)
    assert not native_transport_answers("127.0.0.1", _one_shot_server(b"HTTP/1.1 400 Bad Request\r\n"), timeout=2.0)
    assert not native_transport_answers("127.0.0.1", _one_shot_server(b""), timeout=2.0)  # closed without a frame
    with socket.create_server(("127.0.0.1", 0)) as taken:
        free_port = taken.getsockname()[1]
    assert not native_transport_answers("127.0.0.1", free_port, timeout=2.0)  # nothing listens


def test_auth_failed_tells_a_refused_login_from_a_down_node() -> None:
    from cassandra import AuthenticationFailed
    from cassandra.cluster import NoHostAvailable

    assert _auth_failed(NoHostAvailable("x", {"127.0.0.1:9042": AuthenticationFailed("refused")}))
    assert _auth_failed(NoHostAvailable("x", {"127.0.0.1:9042": Exception("Bad credentials")}))
    assert not _auth_failed(NoHostAvailable("x", {"127.0.0.1:9042": ConnectionRefusedError(111, "refused")}))
    assert not _auth_failed(RuntimeError("no errors attribute"))
