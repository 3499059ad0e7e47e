"""Spark standalone: one master and two workers, run from the installed pyspark distribution.

pyspark ships the full Spark runtime (jars, ``bin/spark-class``), so nothing but the Kafka connector
is downloaded: it is resolved once from Maven Central at exactly pyspark's version, without the jars
pyspark already has, and handed to jobs through ``--jars`` (see ``kafka_connector_jars``).

The workers' Python is *bare* (a virtualenv of the base interpreter with nothing installed): executors get their
packages from the environment the job ships (``covidflow.stack.executor_env``), as on a real cluster, and a job that
does not ship one cannot silently use the project's venv. See docs/decisions/0020-executor-python-environment.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

from covidflow import settings
from covidflow.stack.fetch import MavenCoord, maven_classpath
from covidflow.stack.home import StackHome
from covidflow.stack.service import HOST, ProcessSpec, Service, http_json, java_home

#: Shipped in pyspark/jars already; a second copy on the classpath only causes version clashes.
_PROVIDED_BY_PYSPARK = (
    "org.apache.hadoop:hadoop-client-api",
    "org.apache.hadoop:hadoop-client-runtime",
    "org.apache.spark:spark-tags_2.13",
    "org.scala-lang:scala-library",
    "org.scala-lang.modules:scala-parallel-collections_2.13",
    "org.lz4:lz4-java",
    "at.yawk.lz4:lz4-java",
    "org.xerial.snappy:snappy-java",
    "com.github.luben:zstd-jni",
    "org.slf4j:slf4j-api",
    "com.google.code.findbugs:jsr305",
)


def spark_home() -> Path:
    """The pyspark package folder: it is a complete SPARK_HOME (bin/, jars/)."""
    import pyspark

    return Path(pyspark.__file__).resolve().parent


def spark_version() -> str:
    import pyspark

    return pyspark.__version__


def kafka_connector_coord() -> MavenCoord:
    """The Kafka source/sink for Structured Streaming; it must match the Spark version exactly."""
    return MavenCoord("org.apache.spark", "spark-sql-kafka-0-10_2.13", spark_version(), exclusions=_PROVIDED_BY_PYSPARK)


def kafka_connector_jars(home: StackHome | None = None) -> list[Path]:
    """Jars to pass as ``--jars`` / SparkSubmitOperator ``jars`` for jobs that read or write Kafka.

    Resolves them on first use (network), afterwards only verifies the cached copies.
    """
    home = home or StackHome.from_env()
    return maven_classpath(f"spark-sql-kafka-{spark_version()}", [kafka_connector_coord()], home.cache)


#: One web UI per worker; the first is the documented 8082.
WORKER_UI_PORTS = (settings.SPARK_WORKER_UI_PORT, settings.SPARK_WORKER_UI_PORT + 1)


def bare_python(home: StackHome) -> Path:
    """The workers' Python: ``$COVIDFLOW_HOME/data/spark/bare-python/bin/python`` (made by ``SparkService.prepare``)."""
    return home.data / "spark" / "bare-python" / "bin" / "python"


def spark_env(home: StackHome) -> dict[str, str]:
    """Environment for the daemons and for ``spark-submit`` (same JDK, same loopback address).

    Drivers run this venv's Python; executors default to the workers' bare Python (a job ships its own
    environment with ``spark.archives`` and ``spark.pyspark.python``, see ``supervise.submit_conf``)."""
    data = home.data_dir("spark")
    return {
        "SPARK_HOME": str(spark_home()),
        "JAVA_HOME": str(java_home(17)),
        "SPARK_LOCAL_IP": HOST,
        "SPARK_CONF_DIR": str(home.conf_dir("spark")),  # pyspark has no conf/; keep ours out of the venv
        "SPARK_LOCAL_DIRS": str(data / "local"),
        "SPARK_DAEMON_MEMORY": SparkService.heap,
        # A long-running streaming job must not take both cores, or every other job waits forever.
        "SPARK_MASTER_OPTS": "-Dspark.deploy.defaultCores=1",
        # Remove the work folders of finished applications an hour after they end: each holds copies of every
        # --jars jar and the unpacked executor environment (about 300 MB per executor, ADR 0020).
        "SPARK_WORKER_OPTS": "-Dspark.worker.cleanup.enabled=true -Dspark.worker.cleanup.interval=600 "
        "-Dspark.worker.cleanup.appDataTtl=3600",
        "PYSPARK_DRIVER_PYTHON": sys.executable,
        "PYSPARK_PYTHON": str(bare_python(home)),
    }


def master_status(timeout: float = 3.0) -> dict | None:
    """The master's JSON status page, or None when it does not answer."""
    return http_json(f"http://{HOST}:{settings.SPARK_MASTER_UI_PORT}/json/", timeout=timeout)


class SparkService(Service):
    name = "spark"
    port = settings.SPARK_MASTER_PORT
    extra_ports = (settings.SPARK_MASTER_UI_PORT, *WORKER_UI_PORTS)
    start_timeout = 90.0
    heap = "256m"  # per daemon; executors share the worker's --memory
    workers = len(WORKER_UI_PORTS)
    worker_cores = 1
    # Two apps with a 1g executor each (the streaming job plus a batch job) must fit at once: one per worker.
    worker_memory = "1g"

    def fetch(self, home: StackHome) -> None:
        from covidflow.stack.executor_env import ensure_executor_env

        java_home(17)  # fail here, with a clear message, rather than in spark-class
        kafka_connector_jars(home)
        ensure_executor_env(home)  # jobs ship it to the bare workers

    def prepare(self, home: StackHome) -> None:
        from covidflow.stack.executor_env import make_bare_python

        data = home.data_dir("spark")
        for sub in ("local", *(f"work-{i}" for i in range(1, self.workers + 1))):
            (data / sub).mkdir(exist_ok=True)
        make_bare_python(bare_python(home).parent.parent)

    def processes(self, home: StackHome) -> list[ProcessSpec]:
        spark_class = str(spark_home() / "bin" / "spark-class")
        env = spark_env(home) if _java_ok() else {}
        cwd = home.data_dir("spark")
        master = [
            spark_class, "org.apache.spark.deploy.master.Master",
            "--host", HOST, "--port", str(self.port), "--webui-port", str(settings.SPARK_MASTER_UI_PORT),
        ]  # fmt: skip
        specs = [ProcessSpec("spark-master", master, env=env, cwd=cwd)]
        for i, ui_port in enumerate(WORKER_UI_PORTS, start=1):
            work = cwd / f"work-{i}"  # one work dir each: executors of one worker never see the other's files
            worker = [
                spark_class, "org.apache.spark.deploy.worker.Worker", f"spark://{HOST}:{self.port}",
                "--host", HOST, "--cores", str(self.worker_cores), "--memory", self.worker_memory,
                "--webui-port", str(ui_port), "--work-dir", str(work),
            ]  # fmt: skip
            wenv = {**env, "SPARK_WORKER_DIR": str(work)} if env else {}
            specs.append(ProcessSpec("spark-worker" if i == 1 else f"spark-worker-{i}", worker, env=wenv, cwd=cwd))
        return specs

    def is_healthy(self) -> bool:
        status = master_status()
        if not status or status.get("status") != "ALIVE":
            return False
        return sum(w.get("state") == "ALIVE" for w in status.get("workers", [])) >= self.workers


def _java_ok() -> bool:
    """``stack status`` builds the specs too; it must not fail on a machine without Java 17."""
    try:
        java_home(17)
    except RuntimeError:
        return False
    return True
