"""Executors need nothing installed but Python (issue 15, item 2): the stack's workers run a bare Python, and a job
submitted with ``submit_conf`` runs its executors in the packed environment it ships, on both workers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from covidflow import settings
from covidflow.normalise.supervise import build_bundle, submit_conf
from covidflow.stack.executor_env import ENV_NAME, ensure_executor_env
from covidflow.stack.home import StackHome
from covidflow.stack.services.spark import SparkService, bare_python, master_status, spark_env, spark_home

pytestmark = pytest.mark.integration

#: What the stream's executors import, plus where they found it. One row per task.
PROBE_JOB = """
import json, sys
from pyspark.sql import SparkSession

def probe(batches):
    import os, sys
    from pathlib import Path
    from pyspark import SparkFiles
    sys.path.insert(0, str(Path(SparkFiles.getRootDirectory()) / "covidflow_bundle"))
    import pyarrow as pa, cassandra.cluster, elasticsearch, confluent_kafka, covidflow
    from covidflow.normalise.stream_runtime import process_partition
    from covidflow.normalise.columnar import BatchNormaliser
    from covidflow.store.cassandra_writer import CassandraWriter
    from covidflow.index.es_writer import EsWriter
    for _ in batches:
        row = {"executable": sys.executable, "prefix": sys.prefix, "cwd": os.getcwd(),
               "pyarrow": pa.__file__, "covidflow": covidflow.__file__}
        yield pa.RecordBatch.from_pydict({"probe": [json.dumps(row)]})

spark = SparkSession.builder.appName(sys.argv[1]).getOrCreate()
rows = spark.range(0, 8, numPartitions=4).mapInArrow(probe, "probe string").collect()
print("RESULT " + json.dumps(sorted({r.probe for r in rows})))
spark.stop()
"""


def _submit(tmp_path: Path, conf: dict[str, str], app: str, home: StackHome) -> list[dict]:
    job = tmp_path / "probe.py"
    job.write_text(textwrap.dedent(PROBE_JOB))
    cmd = [str(spark_home() / "bin" / "spark-submit"), "--master", settings.SPARK_MASTER]
    for key, value in conf.items():
        cmd += ["--conf", f"{key}={value}"]
    env = {**os.environ, **spark_env(home)}
    proc = subprocess.run([*cmd, str(job), app], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert len(results) == 1, proc.stdout + proc.stderr[-4000:]
    return [json.loads(r) for r in json.loads(results[0].removeprefix("RESULT "))]


def test_the_workers_python_has_none_of_the_projects_packages() -> None:
    home = StackHome.from_env()
    python = bare_python(home)
    workers = [p for p in SparkService().processes(home) if p.name.startswith("spark-worker")]
    assert len(workers) == 2
    assert {p.env["PYSPARK_PYTHON"] for p in workers} == {str(python)}
    for module in ("pyarrow", "covidflow", "cassandra", "pyspark"):
        proc = subprocess.run([str(python), "-c", f"import {module}"], capture_output=True, text=True, cwd="/")
        assert proc.returncode == 1 and f"No module named '{module}'" in proc.stderr, (module, proc.stderr)


def test_executors_run_the_shipped_environment_on_the_bare_workers(tmp_path: Path) -> None:
    """Every executor runs Python from the unpacked archive, in a bare worker's work dir. Both workers are asked for;
    when the stream holds one worker's core (it runs during the suite), the job gets the other one only."""
    status = master_status()
    assert status is not None, "Spark master does not answer; run `covidflow stack up spark`"
    assert status["aliveworkers"] == 2, status["workers"]
    home = StackHome.from_env()
    archive = ensure_executor_env(home)
    conf = {
        **submit_conf(build_bundle(tmp_path / "bundle.zip"), archive),
        "spark.cores.max": "2",  # one executor per free worker (the master spreads them out)
    }
    assert conf["spark.pyspark.python"] == f"./{ENV_NAME}/bin/python"
    assert conf["spark.pyspark.driver.python"] == sys.executable
    rows = _submit(tmp_path, conf, f"covidflow-test-executor-env-{uuid.uuid4().hex[:8]}", home)
    work_dirs = {home.data / "spark" / f"work-{i}" for i in (1, 2)}
    used = set()
    for row in rows:
        cwd = Path(row["cwd"])
        work = cwd.parent.parent  # <work dir>/<app id>/<executor id>
        assert work in work_dirs, row
        used.add(work)
        assert row["prefix"] == str(cwd / ENV_NAME), row
        assert row["executable"] == str(cwd / ENV_NAME / "bin" / "python"), row
        assert row["pyarrow"].startswith(str(cwd / ENV_NAME / "lib")), row
        assert row["covidflow"] == str(cwd / "covidflow_bundle" / "covidflow" / "__init__.py"), row
    assert used, "no executor reported"
