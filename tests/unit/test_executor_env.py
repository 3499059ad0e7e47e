"""The executors' shipped Python environment (no services): its pins, its key, the conf that ships it, and the
stack's bare-Python workers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from covidflow.normalise import supervise
from covidflow.normalise.supervise import spark_submit_command, submit_conf
from covidflow.stack import executor_env
from covidflow.stack.executor_env import (
    CONSTRAINTS,
    ENV_NAME,
    archive_path,
    canonical,
    constraint_pins,
    env_key,
    executor_requirements,
    make_bare_python,
)
from covidflow.stack.home import StackHome
from covidflow.stack.services import spark
from covidflow.stack.services.spark import WORKER_UI_PORTS, SparkService, bare_python, spark_env


def test_executor_pins_are_the_locks_versions_and_hold_no_airflow_spark_or_pandas() -> None:
    reqs = executor_requirements()
    pins = constraint_pins()
    names = {r.split("==")[0] for r in reqs}
    assert {"pyarrow", "numpy", "pyyaml", "cassandra-driver", "elasticsearch", "confluent-kafka", "lxml"} <= names
    assert all(pins[name] == version for name, version in (r.split("==") for r in reqs))
    assert not {n for n in names if n.startswith(("apache-airflow", "pyspark", "pandas", "boto"))}
    assert reqs == sorted(reqs)


def test_a_package_missing_from_the_lock_is_an_error_not_a_guess(tmp_path: Path) -> None:
    lock = tmp_path / "constraints.txt"
    lock.write_text("".join(line + "\n" for line in CONSTRAINTS.read_text().splitlines() if "pyarrow" not in line))
    with pytest.raises(RuntimeError, match=r"executor packages not pinned in constraints\.txt: pyarrow"):
        executor_requirements(constraints=lock)


def test_lock_lines_are_read_with_canonical_names(tmp_path: Path) -> None:
    lock = tmp_path / "c.txt"
    lock.write_text("PyYAML==6.0.4\nmoto[server]==5.2.5  # comment\n# note==1\nzope.interface==8.0\n")
    assert constraint_pins(lock) == {"pyyaml": "6.0.4", "moto": "5.2.5", "zope-interface": "8.0"}
    assert canonical("Zope_Interface") == "zope-interface"


def test_the_archive_key_follows_the_pins_not_their_order(tmp_path: Path) -> None:
    a = ["numpy==2.4.6", "pyarrow==26.0.1"]
    assert env_key(a) == env_key(list(reversed(a)))
    assert env_key(a) != env_key(["numpy==2.4.6", "pyarrow==26.0.2"])
    path = archive_path(StackHome(tmp_path), a)
    assert path == tmp_path / "cache" / "executor-env" / f"covidflow-executor-env-{env_key(a)}.tar.gz"


def test_submit_conf_ships_the_environment_and_points_executors_at_its_python(tmp_path: Path) -> None:
    bundle, env = tmp_path / "b.zip", tmp_path / "env.tar.gz"
    conf = submit_conf(bundle, env)
    assert conf["spark.archives"] == f"{bundle}#covidflow_bundle,{env}#{ENV_NAME}"
    assert conf["spark.pyspark.python"] == "./covidflow_env/bin/python"
    assert conf["spark.pyspark.driver.python"] == sys.executable


def test_submit_conf_builds_the_environment_when_none_is_given(tmp_path: Path, monkeypatch) -> None:
    built = tmp_path / "built.tar.gz"
    monkeypatch.setattr(executor_env, "ensure_executor_env", lambda home=None: built)
    assert submit_conf(tmp_path / "b.zip")["spark.archives"].endswith(f",{built}#{ENV_NAME}")


def test_a_local_master_runs_executors_in_this_python_and_builds_nothing(tmp_path: Path, monkeypatch) -> None:
    def no_build(home: object = None) -> Path:
        raise AssertionError("a local master must not build the executor environment")

    monkeypatch.setattr(executor_env, "ensure_executor_env", no_build)
    cmd = spark_submit_command("local[2]", ["--available-now"], bundle=tmp_path / "b.zip", jars=[])
    conf = dict(cmd[i + 1].split("=", 1) for i, arg in enumerate(cmd) if arg == "--conf")
    assert conf["spark.pyspark.python"] == conf["spark.pyspark.driver.python"] == sys.executable
    assert conf["spark.archives"] == f"{tmp_path / 'b.zip'}#covidflow_bundle"
    assert cmd[-2:] == [str(supervise.JOB_PATH), "--available-now"]


def test_two_bare_python_workers_with_their_own_work_dirs_and_ports(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(spark, "_java_ok", lambda: True)
    monkeypatch.setattr(spark, "java_home", lambda major=17: Path("/jdk"))
    home = StackHome(tmp_path)
    workers = [p for p in SparkService().processes(home) if p.name.startswith("spark-worker")]
    assert [p.name for p in workers] == ["spark-worker", "spark-worker-2"]
    work = [p.argv[p.argv.index("--work-dir") + 1] for p in workers]
    assert work == [str(tmp_path / "data" / "spark" / f"work-{i}") for i in (1, 2)]
    assert [p.env["SPARK_WORKER_DIR"] for p in workers] == work
    assert [int(p.argv[p.argv.index("--webui-port") + 1]) for p in workers] == list(WORKER_UI_PORTS)
    assert set(SparkService().ports) >= set(WORKER_UI_PORTS)
    assert {p.env["PYSPARK_PYTHON"] for p in workers} == {str(bare_python(home))}
    assert spark_env(home)["PYSPARK_DRIVER_PYTHON"] == sys.executable
    # each executor unpacks ~300 MB: finished applications' folders go after an hour, not a day
    assert "-Dspark.worker.cleanup.appDataTtl=3600" in spark_env(home)["SPARK_WORKER_OPTS"].split()
    # together they keep the single worker's 2 cores and 2 GB: two apps with 1g executors fit at once
    assert [(p.argv[p.argv.index("--cores") + 1], p.argv[p.argv.index("--memory") + 1]) for p in workers] == [
        ("1", "1g"),
        ("1", "1g"),
    ]


def test_healthy_only_with_every_worker_alive(monkeypatch) -> None:
    def status(*alive: str) -> dict:
        return {"status": "ALIVE", "workers": [{"state": s} for s in alive]}

    for workers, healthy in ((("ALIVE", "ALIVE"), True), (("ALIVE", "DEAD"), False), (("ALIVE",), False)):
        monkeypatch.setattr(spark, "master_status", lambda w=workers: status(*w))
        assert SparkService().is_healthy() is healthy


def test_the_bare_python_has_none_of_the_projects_packages(tmp_path: Path) -> None:
    python = make_bare_python(tmp_path / "bare")
    assert make_bare_python(tmp_path / "bare") == python  # idempotent
    for module in ("pyarrow", "yaml", "covidflow", "pyspark"):
        done = subprocess.run([str(python), "-c", f"import {module}"], capture_output=True, text=True, cwd=tmp_path)
        assert done.returncode == 1 and f"No module named '{module}'" in done.stderr, (module, done.stderr)
    done = subprocess.run(
        [str(python), "-c", "import sys; print(sys.version_info[:2])"], capture_output=True, text=True
    )
    assert done.stdout.strip() == str(sys.version_info[:2])


def test_airflow_forwards_both_pythons_to_spark_submit(tmp_path: Path, monkeypatch) -> None:
    from covidflow.stack.services import airflow

    monkeypatch.setattr(spark, "java_home", lambda major=17: Path("/jdk"))
    env = airflow._spark_client_env(StackHome(tmp_path))
    assert env["PYSPARK_DRIVER_PYTHON"] == sys.executable
    assert env["PYSPARK_PYTHON"] == str(bare_python(StackHome(tmp_path)))
