"""A small client of Airflow's REST API (v2): what `make demo` and the tests need to drive DAG runs.

It logs in as the stack's simple-auth admin; the password comes from the stack's own secrets.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from covidflow import settings
from covidflow.stack.home import StackHome

FINISHED = ("success", "failed")


class AirflowApiError(RuntimeError):
    """The API answered with an unexpected status; the message carries it and the body."""


def request(
    method: str, path: str, body: dict[str, Any] | None = None, token: str | None = None, timeout: float = 10
) -> tuple[int, dict[str, Any]]:
    """(status, JSON body) of one call; HTTP errors are returned, not raised, so callers can assert on them."""
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"{settings.AIRFLOW_URL}{path}", data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


class AirflowClient:
    def __init__(self, home: StackHome | None = None) -> None:
        from covidflow.stack.services.airflow import ADMIN_USER, admin_password

        self.token = ""
        login = {"username": ADMIN_USER, "password": admin_password(home)}
        self.token = self.call("POST", "/auth/token", login, ok=(201,), patience=120)["access_token"]

    def call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        ok: tuple[int, ...] = (200,),
        patience: float = 180,
    ) -> dict:
        """One call, retried for ``patience`` s on what passes: a 5xx or a time-out (SQLite busy while the
        scheduler writes), a 404 (a DAG the dag-processor has not parsed yet)."""
        deadline = time.monotonic() + patience
        while True:
            try:
                status, answer = request(method, path, body, self.token, timeout=30)
            except OSError as exc:  # timed out, or the connection was reset
                status, answer = 0, {"error": str(exc)}
            if status in ok:
                return answer
            if not (status == 0 or status >= 500 or status == 404) or time.monotonic() > deadline:
                raise AirflowApiError(f"{method} {path}: HTTP {status} {answer}")
            time.sleep(2)

    def wait_for_dags(self, dag_ids: list[str], timeout: float = 300) -> None:
        """Block until the dag-processor has parsed every one of ``dag_ids`` (a fresh Airflow needs a moment)."""
        deadline = time.monotonic() + timeout
        while True:
            known = {d["dag_id"] for d in self.call("GET", "/api/v2/dags?limit=1000")["dags"]}
            missing = sorted(set(dag_ids) - known)
            if not missing:
                return
            if time.monotonic() > deadline:
                raise AirflowApiError(f"DAGs not parsed after {timeout:.0f} s: {', '.join(missing)}")
            time.sleep(3)

    def retire_dag(self, dag_id: str, timeout: float = 120) -> bool:
        """Pause ``dag_id``, fail its unfinished runs, wait until none of its tasks runs, then delete it.

        Deleting a DAG whose run the scheduler is examining crashes Airflow 3's scheduler loop (ObjectDeletedError),
        and with a long-running task (the stream) it then waits forever: a continuous ingest DAG always has such a
        run. Paused DAGs' runs are not examined, so pausing and failing them first makes the delete safe.
        Returns whether the DAG is gone; one whose tasks stay busy past ``timeout`` is left paused.
        """
        dag = f"/api/v2/dags/{dag_id}"
        if request("GET", dag, token=self.token, timeout=30)[0] == 404:
            return True
        self.call("PATCH", dag, {"is_paused": True})
        for state in ("running", "queued"):
            for run in self.call("GET", f"{dag}/dagRuns?state={state}&limit=100")["dag_runs"]:
                url = f"{dag}/dagRuns/{urllib.parse.quote(run['dag_run_id'])}"
                self.call("PATCH", url, {"state": "failed"}, ok=(200, 404, 409))
        deadline = time.monotonic() + timeout
        busy = ("running", "queued", "scheduled", "deferred", "up_for_retry", "restarting")
        while True:
            tis = self.call("GET", f"{dag}/dagRuns/~/taskInstances?limit=1000")["task_instances"]
            if not any(t["state"] in busy for t in tis):
                break
            if time.monotonic() > deadline:  # left paused, which is harmless; deleting now could crash the scheduler
                print(f"retire {dag_id}: tasks still busy after {timeout:.0f} s; left paused, not deleted")
                return False
            time.sleep(2)
        time.sleep(5)  # a scheduler loop that had selected a run before the pause finishes with it
        status, _ = request("DELETE", dag, token=self.token, timeout=60)
        return status in (204, 404)  # 409: Airflow still counts a task as running; the DAG stays, paused

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None) -> str:
        """Unpause ``dag_id`` and start a run now; returns the run id."""
        dag = f"/api/v2/dags/{dag_id}"
        if self.call("GET", dag)["is_paused"]:  # write only when needed: SQLite has one writer at a time
            self.call("PATCH", dag, {"is_paused": False})
        run = self.call("POST", f"{dag}/dagRuns", {"logical_date": None, "conf": conf or {}})
        return run["dag_run_id"]

    def wait(self, dag_id: str, run_id: str, timeout: float = 300) -> tuple[str, dict[str, str]]:
        """Wait for the run to finish; returns its state and each task's state."""
        url = f"/api/v2/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id)}"
        deadline = time.monotonic() + timeout
        state = "queued"
        while time.monotonic() < deadline:
            state = self.call("GET", url)["state"]
            if state in FINISHED:
                break
            time.sleep(2)
        tasks = self.call("GET", f"{url}/taskInstances")["task_instances"]
        return state, {t["task_id"]: t["state"] for t in tasks}
