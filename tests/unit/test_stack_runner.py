"""The runner's promises, checked on real processes (a tiny HTTP server), with no stack service needed."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

from covidflow.stack.home import StackHome
from covidflow.stack.runner import Runner, StackError, pid_alive, read_pid
from covidflow.stack.service import ProcessSpec, Service, http_get


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class TinyHttp(Service):
    """A stand-in service: python's http.server, healthy when it answers GET /."""

    name = "tiny"
    start_timeout = 20.0

    def __init__(self, port: int, argv: list[str] | None = None) -> None:
        self.port = port
        self.argv = argv or [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]

    def processes(self, home: StackHome) -> list[ProcessSpec]:
        return [ProcessSpec("tiny", self.argv, cwd=home.data_dir("tiny"))]

    def is_healthy(self) -> bool:
        return http_get(f"http://127.0.0.1:{self.port}/", timeout=1)[0] == 200


@pytest.fixture
def home(tmp_path: Path) -> StackHome:
    return StackHome(tmp_path / "home")


def test_up_is_idempotent_and_down_stops_only_what_it_started(home: StackHome) -> None:
    runner = Runner([TinyHttp(free_port())], home)
    try:
        runner.up()
        first = read_pid(home, "tiny")
        assert first and pid_alive(first)
        [state] = runner.status()
        assert state.up and state.pids == [first]
        assert "up" in state.line() and str(first) in state.line()

        runner.up()  # already up: left alone, same process
        assert read_pid(home, "tiny") == first
    finally:
        runner.down(grace=5)
    assert not pid_alive(first)
    assert not home.pid_file("tiny").exists()
    [state] = runner.status()
    assert not state.up and state.pids == []


def test_port_taken_by_a_stranger_names_the_service_and_port(home: StackHome) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        with pytest.raises(StackError) as err:
            Runner([TinyHttp(port)], home).up()
    assert f"tiny: port {port} on 127.0.0.1 already in use by a process the stack did not start" in str(err.value)
    assert read_pid(home, "tiny") is None


def test_a_process_that_dies_at_start_reports_its_log_tail(home: StackHome) -> None:
    crash = [sys.executable, "-c", "import sys; print('config line 3: bad value for heap'); sys.exit(3)"]
    with pytest.raises(StackError) as err:
        Runner([TinyHttp(free_port(), crash)], home).up()
    message = str(err.value)
    assert message.startswith("tiny: tiny exited during start-up")
    assert "config line 3: bad value for heap" in message
    assert str(home.log_file("tiny")) in message


def test_reset_wipes_data_but_keeps_the_download_cache(home: StackHome) -> None:
    (home.cache / "kept.jar").write_bytes(b"jar")
    (home.data_dir("tiny") / "state").write_text("x")
    Runner([TinyHttp(free_port())], home).reset()
    assert (home.cache / "kept.jar").read_bytes() == b"jar"
    assert not (home.root / "data").exists()
