"""Start, check and stop the services of the local stack, one after the other.

Processes run in their own session (process group), so ``stack down`` stops a service and all its
children, and nothing that the stack did not start. Pid files under ``run/`` are the only record.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from covidflow.stack.home import StackHome
from covidflow.stack.service import ProcessSpec, Service, port_open

log = logging.getLogger(__name__)


class StackError(RuntimeError):
    """A service could not be fetched or started; the message names it and shows its log's tail."""


@dataclass
class ServiceState:
    name: str
    up: bool
    port: int
    pids: list[int]
    logs: list[Path]
    rss_bytes: int = 0  # the service's processes and all their children

    def line(self) -> str:
        pids = ",".join(map(str, self.pids)) or "-"
        logs = " ".join(str(p) for p in self.logs)
        rss = f"{self.rss_bytes / 2**20:.0f} MB" if self.pids else "-"
        return (
            f"{self.name:<14} {'up' if self.up else 'down':<5} port {self.port:<5} rss {rss:>8}  pid {pids:<18} {logs}"
        )


def tree_rss(pids: Iterable[int]) -> int:
    """Resident memory of processes and their descendants (what `stack status` reports)."""
    import psutil

    total = 0
    for pid in pids:
        try:
            root = psutil.Process(pid)
            total += sum(p.memory_info().rss for p in (root, *root.children(recursive=True)))
        except psutil.Error:
            continue
    return total


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours still answers kill(0); treat it as dead.
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(") ")[-1][:1] != "Z"
    except OSError:
        return True


def read_pid(home: StackHome, process: str) -> int | None:
    path = home.pid_file(process)
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if pid_alive(pid) else None


def tail(path: Path, lines: int = 30) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 64 * 1024))
            text = handle.read().decode("utf-8", "replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


class Runner:
    def __init__(self, services: Iterable[Service], home: StackHome | None = None) -> None:
        self.services = list(services)
        self.home = home or StackHome.from_env()

    # --- queries ---------------------------------------------------------------------------------

    def state(self, service: Service) -> ServiceState:
        procs = service.processes(self.home)
        pids = [pid for pid in (read_pid(self.home, p.name) for p in procs) if pid]
        up = len(pids) == len(procs) and service.is_healthy()
        logs = [self.home.log_file(p.name) for p in procs]
        return ServiceState(service.name, up, service.port, pids, logs, tree_rss(pids))

    def status(self) -> list[ServiceState]:
        return [self.state(s) for s in self.services]

    # --- up --------------------------------------------------------------------------------------

    def up(self) -> None:
        for service in self.services:
            self.up_one(service)

    def up_one(self, service: Service) -> None:
        home = self.home
        procs = service.processes(home)
        running = {p.name: read_pid(home, p.name) for p in procs}
        if all(running.values()) and service.is_healthy():
            log.info("%s: already up (pid %s), left alone", service.name, ",".join(map(str, running.values())))
            return
        if not any(running.values()):
            taken = [port for port in service.ports if port_open(port)]
            if taken:
                ports = f"port {taken[0]}" if len(taken) == 1 else f"ports {', '.join(map(str, taken))}"
                raise StackError(
                    f"{service.name}: {ports} on 127.0.0.1 already in use by a "
                    f"process the stack did not start. Stop it, or free the port, then run `covidflow stack up`."
                )
        started = time.monotonic()
        try:
            log.info("%s: fetching what is missing into %s", service.name, home.cache)
            service.fetch(home)
            service.prepare(home)
        except Exception as exc:
            raise StackError(f"{service.name}: could not be fetched or prepared: {exc}") from exc
        for proc in procs:
            if not running.get(proc.name):
                self._spawn(proc)
        self._wait_healthy(service, procs, started)
        try:
            service.after_start(home)
        except Exception as exc:
            raise StackError(f"{service.name}: started, but its set-up step failed: {exc}") from exc
        log.info("%s: up on 127.0.0.1:%d in %.0f s", service.name, service.port, time.monotonic() - started)

    def _spawn(self, proc: ProcessSpec) -> None:
        logfile = self.home.log_file(proc.name)
        argv = list(proc.argv)
        if proc.user and os.geteuid() == 0:
            argv = ["setpriv", f"--reuid={proc.user}", f"--regid={proc.user}", "--init-groups", "--", *argv]
        env = {**os.environ, **proc.env}
        with logfile.open("ab") as out:
            out.write(f"\n=== covidflow: starting {proc.name} at {time.ctime()}: {' '.join(argv)}\n".encode())
            out.flush()
            child = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=proc.cwd,
                env=env,
                start_new_session=True,
            )
        self.home.pid_file(proc.name).write_text(f"{child.pid}\n")
        log.info("%s: started pid %d, log %s", proc.name, child.pid, logfile)

    def _wait_healthy(self, service: Service, procs: list[ProcessSpec], started: float) -> None:
        deadline = started + service.start_timeout
        while True:
            dead = [p for p in procs if not read_pid(self.home, p.name)]
            if dead:
                raise StackError(self._failure(service, dead[0], "exited during start-up"))
            if service.is_healthy():
                return
            if time.monotonic() > deadline:
                raise StackError(self._failure(service, procs[0], f"not healthy after {service.start_timeout:.0f} s"))
            time.sleep(1.0)

    def _failure(self, service: Service, proc: ProcessSpec, what: str) -> str:
        logfile = self.home.log_file(proc.name)
        return (
            f"{service.name}: {proc.name} {what}. Last lines of {logfile}:\n{tail(logfile)}\n"
            f"(full log: covidflow stack logs {service.name})"
        )

    # --- down / reset ----------------------------------------------------------------------------

    def down(self, grace: float = 30.0) -> None:
        for service in reversed(self.services):
            for proc in reversed(service.processes(self.home)):
                self._stop(proc.name, grace)

    def _stop(self, name: str, grace: float) -> None:
        pid = read_pid(self.home, name)
        pid_file = self.home.pid_file(name)
        if pid is None:
            pid_file.unlink(missing_ok=True)
            return
        log.info("%s: stopping pid %d", name, pid)
        self._signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.3)
        if pid_alive(pid):
            log.warning("%s: still running after %.0f s, killing it", name, grace)
        self._signal_group(pid, signal.SIGKILL)  # also reaps children left in the group
        pid_file.unlink(missing_ok=True)

    @staticmethod
    def _signal_group(pid: int, sig: signal.Signals) -> None:
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            pass
        except PermissionError:
            os.kill(pid, sig)

    def reset(self) -> None:
        self.down()
        for folder in (self.home.data, self.home.conf, self.home.logs, self.home.run):
            shutil.rmtree(folder, ignore_errors=True)
