"""Secrets reach the stream's Spark job without showing in the spark-submit command line, in ``ps`` or in task logs.

The command is the apache-spark provider's own (SparkSubmitHook's builder), from StreamSubmitOperator's settings,
with every connection holding a password. The last test runs the real spark-submit (local master, no stack) through
the hook and the job's own session code, and reads /proc/<pid>/cmdline and the event log.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import pytest

from covidflow import PROJECT_ROOT, clients, settings

SPARK_SECRET = "spark-conn-Secret-4471"
KAFKA_SECRET = "kafka-sasl-Secret-9023"
CASS_SECRET = "cassandra-Secret-5518"
ES_SECRET = "elastic-Secret-7736"
ALL = (SPARK_SECRET, KAFKA_SECRET, CASS_SECRET, ES_SECRET)
JOB = PROJECT_ROOT / "spark_jobs" / "normalise_stream.py"


def _env(name: str) -> str:
    return f"AIRFLOW_CONN_{name.upper()}"


@pytest.fixture(autouse=True)
def _connections(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every connection the stream touches, each with a password (JSON form, as the stack and compose write them)."""
    monkeypatch.delenv("AIRFLOW__SECRETS__BACKEND", raising=False)
    for conn_id in clients.STREAM_CONNECTIONS:
        monkeypatch.delenv(clients.executor_env_name(conn_id), raising=False)
    conns = {
        settings.CONN_SPARK: {"conn_type": "spark", "host": "spark://127.0.0.1", "port": 7077, "login": "spark",
                              "password": SPARK_SECRET, "extra": {"deploy-mode": "client"}},
        settings.CONN_KAFKA: {"conn_type": "kafka", "extra": {
            "bootstrap.servers": "127.0.0.1:9092", "security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN",
            "sasl.username": "covidflow", "sasl.password": KAFKA_SECRET}},
        settings.CONN_CASSANDRA: {"conn_type": "cassandra", "host": "127.0.0.1", "port": 9042, "login": "covidflow",
                                  "password": CASS_SECRET},
        settings.CONN_ELASTICSEARCH: {"conn_type": "elasticsearch", "host": "127.0.0.1", "port": 9200,
                                      "schema": "http", "login": "elastic", "password": ES_SECRET},
    }  # fmt: skip
    for conn_id, conn in conns.items():
        monkeypatch.setenv(_env(conn_id), json.dumps(conn))


def _operator(**kwargs: object) -> object:
    from covidflow.normalise.stream_operator import StreamSubmitOperator

    return StreamSubmitOperator(task_id="submit_stream", conn_id=settings.CONN_SPARK, application=str(JOB),
                                application_args=["--master-ui", "http://127.0.0.1:8081"], **kwargs)  # fmt: skip


def test_the_spark_submit_command_and_its_log_line_carry_no_secret(tmp_path: Path, caplog, capsys) -> None:
    from covidflow.normalise.supervise import submit_conf
    from covidflow.stack.home import StackHome
    from covidflow.stack.services.spark import spark_env

    op = _operator()
    conf = submit_conf(tmp_path / "bundle.zip", tmp_path / "env.tar.gz")  # no environment is built here
    op.configure(conf, [tmp_path / "kafka.jar"], spark_env(StackHome(tmp_path)))
    hook = op._get_hook()
    with caplog.at_level(logging.INFO):
        cmd = hook._build_spark_submit_command(op.application)
    line = " ".join(cmd)
    out = capsys.readouterr()
    logged = caplog.text + out.out + out.err  # Airflow's structlog writes the hook's lines to stdout
    assert cmd[cmd.index("--master") + 1] == "spark://127.0.0.1:7077"  # the real command, from the connection
    assert str(JOB) in cmd and "--conf" in cmd
    for secret in ALL:
        assert secret not in line
        assert secret not in logged
        assert all(secret not in str(v) for v in op.env_vars.values())  # the Popen environment adds none either
    assert "Spark-Submit cmd" in logged


@pytest.mark.parametrize("where", ["conf", "application_args", "env_vars"])
def test_a_secret_given_to_the_command_line_is_refused(tmp_path: Path, where: str) -> None:
    """The hook would put it in --conf (or, on YARN and Kubernetes, env_vars too) and log the command."""
    value = f"user:{KAFKA_SECRET}"
    extra = {
        "conf": {"conf": {"spark.executorEnv.KAFKA_AUTH": value}},
        "application_args": {},
        "env_vars": {"env_vars": {"KAFKA_AUTH": value}},
    }[where]
    op = _operator(**extra)
    if where == "application_args":
        op.application_args = [*op.application_args, "--kafka-auth", value]
    with pytest.raises(ValueError, match="refusing to submit") as err:
        op.configure({}, [], {})
    assert KAFKA_SECRET not in str(err.value)


def test_the_operator_masks_every_stream_secret_in_task_logs() -> None:
    """The hook copies the driver's output into the task log. Airflow's connection lookup already masks the
    passwords it returns; the operator registers every secret the job can print (the JAAS line included) itself,
    so none depends on how the lookup was made."""
    from airflow.sdk._shared.secrets_masker import redact

    from covidflow.normalise.stream_operator import mask_stream_secrets, stream_secrets

    jaas = clients.kafka_spark_options()["kafka.sasl.jaas.config"]
    assert set(stream_secrets()) == {KAFKA_SECRET, CASS_SECRET, ES_SECRET, jaas}
    assert mask_stream_secrets() == 4
    driver_output = f"driver: auth {KAFKA_SECRET} / {CASS_SECRET} / {ES_SECRET} / {jaas}"
    masked = redact(driver_output)
    for secret in (KAFKA_SECRET, CASS_SECRET, ES_SECRET):
        assert secret not in masked
    assert masked.startswith("driver: auth ***")


APP = """
import json, logging, os, sys
logging.basicConfig(level=logging.INFO)  # as the job's main() does
sys.path.insert(0, {jobs!r})
import normalise_stream

def cmdline(pid):
    try:
        with open(f"/proc/{{pid}}/cmdline", "rb") as f:
            return f.read().replace(b"\\0", b" ").decode(errors="replace")
    except OSError:
        return ""

spark = normalise_stream.spark_session("covidflow-secrets-test")
conf = dict(spark.sparkContext.getConf().getAll())
secrets = [json.loads(os.environ[name])["extra"]["sasl.password"] if "KAFKA" in name
           else json.loads(os.environ[name])["password"] for name in {names!r}]
pids = [p for p in os.listdir("/proc") if p.isdigit()]
result = {{
    "driver": cmdline("self"),
    "submit": cmdline(os.getppid()),
    "processes_read": sum(1 for p in pids if cmdline(p)),
    "leaks": [p for p in pids if any(s in cmdline(p) for s in secrets)],
    "executor_env": sorted(k for k in conf if k.startswith("spark.executorEnv.")),
    "forwarded": conf.get("spark.executorEnv.COVIDFLOW_SECRET_CONN_COVIDFLOW_KAFKA")
                 == os.environ["AIRFLOW_CONN_COVIDFLOW_KAFKA"],
}}
spark.stop()
with open({out!r}, "w") as f:
    json.dump(result, f)
"""


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="needs Linux /proc")
def test_real_spark_submit_no_secret_in_any_process_cmdline_nor_event_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog, capsys
) -> None:
    """spark-submit (local master) through the provider's hook, running the job's own session code: the executors'
    credentials are in the driver's SparkConf, but in no process's command line, in no log line and, redacted, in
    the event log (the UI's environment page reads the same redacted properties)."""
    from covidflow.stack.home import StackHome
    from covidflow.stack.services.spark import spark_env

    monkeypatch.setenv(_env(settings.CONN_SPARK), json.dumps({"conn_type": "spark", "host": "local[1]", "login": "s",
                                                               "password": SPARK_SECRET}))  # fmt: skip
    out, events = tmp_path / "result.json", tmp_path / "events"
    events.mkdir()
    app = tmp_path / "app.py"
    names = [_env(c) for c in clients.STREAM_CONNECTIONS]
    app.write_text(APP.format(jobs=str(JOB.parent), names=names, out=str(out)), encoding="utf-8")
    env = {**spark_env(StackHome(tmp_path)), "PYTHONPATH": str(PROJECT_ROOT)}
    op = _operator(conf={"spark.eventLog.enabled": "true", "spark.eventLog.dir": f"file://{events}",
                         "spark.eventLog.compress": "false",
                         "spark.ui.enabled": "false", "spark.driver.memory": "512m"})  # fmt: skip
    op.application = str(app)
    op.application_args = []
    op.configure({"spark.pyspark.python": sys.executable}, [], env)
    hook = op._get_hook()
    with caplog.at_level(logging.INFO):
        hook.submit(op.application)
    captured = capsys.readouterr()
    logged = caplog.text + captured.out + captured.err  # the hook copies the driver's output into the task log
    result = json.loads(out.read_text(encoding="utf-8"))
    assert "spark-submit" in result["submit"] or "SparkSubmit" in result["submit"], result["submit"]
    assert str(app) in result["driver"]
    assert result["processes_read"] > 2 and result["leaks"] == []
    assert result["executor_env"] == sorted(f"spark.executorEnv.{clients.executor_env_name(c)}"
                                            for c in clients.STREAM_CONNECTIONS)  # fmt: skip
    assert result["forwarded"] is True  # the secret did reach the executors' conf
    log_text = "\n".join(p.read_text(errors="replace") for p in events.rglob("*") if p.is_file())
    assert "spark.executorEnv.COVIDFLOW_SECRET_CONN_COVIDFLOW_KAFKA" in log_text and "(redacted)" in log_text
    for secret in ALL:
        assert secret not in log_text
        assert secret not in logged
    assert "executors get credentials for" in logged  # the driver's own log line did reach the task log
    assert os.environ[_env(settings.CONN_KAFKA)]  # the driver got it from the environment, as the task has it
