"""`covidflow stack env`: the exports a shell needs, quoted so that eval gives back every value exactly."""

from __future__ import annotations

import subprocess
from pathlib import Path

from covidflow.stack.home import StackHome
from covidflow.stack.oncall import KAFKA_TOOLS, oncall_env, shell_script


def test_eval_in_bash_gives_back_every_value_and_defines_the_kafka_tools(tmp_path: Path) -> None:
    env = {"AIRFLOW_CONN_X": '{"extra": {"a": "it\'s $HOME `x`"}}', "PLAIN": "v", "KAFKA_BOOTSTRAP_SERVERS": "h:1"}
    script = shell_script(env) + 'printf "%s\\n" "$AIRFLOW_CONN_X"; type kafka-topics | head -1\n'
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True)
    lines = done.stdout.splitlines()
    assert lines[0] == env["AIRFLOW_CONN_X"]
    assert lines[1] == "kafka-topics is a function"
    for command, (main, _, config) in KAFKA_TOOLS.items():
        assert f"{command}() {{" in script and main in script
        assert f'{config} "$COVIDFLOW_KAFKA_CLIENT_CONFIG"' in script
    assert 'cqlsh() { command cqlsh --cqlshrc "$COVIDFLOW_CQLSHRC" "$@"; }' in script


def test_the_env_points_at_the_stack_of_this_home(tmp_path: Path) -> None:
    home = StackHome(tmp_path)
    env = oncall_env(home)
    assert env["AIRFLOW_HOME"] == str(tmp_path / "data" / "airflow")
    assert {"AIRFLOW_CONN_COVIDFLOW_S3", "AIRFLOW_CONN_COVIDFLOW_KAFKA", "AIRFLOW__CORE__DAGS_FOLDER"} <= set(env)
    assert env["PATH"].split(":")[0] == str(tmp_path / "cache" / "tools" / "cqlsh" / "bin")
    assert (env["CQLSH_HOST"], env["CQLSH_PORT"]) == ("127.0.0.1", "9042")
    assert str(tmp_path / "cache" / "maven" / "kafka-tools-4.3.1") in env["COVIDFLOW_KAFKA_CLASSPATH"]


def test_the_tools_log_in_with_the_stack_secrets_from_private_files(tmp_path: Path) -> None:
    import stat

    from covidflow.stack.credentials import local_secret

    home = StackHome(tmp_path)
    env = oncall_env(home)
    cqlshrc, kafka = Path(env["COVIDFLOW_CQLSHRC"]), Path(env["COVIDFLOW_KAFKA_CLIENT_CONFIG"])
    assert cqlshrc.read_text() == (
        f"[authentication]\nusername = covidflow\npassword = {local_secret(home, 'cassandra_password')}\n"
    )
    password = local_secret(home, "kafka_client_password")
    assert kafka.read_text().splitlines() == [
        "sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required "
        f'username="covidflow" password="{password}";',
        "sasl.mechanism=PLAIN",
        "security.protocol=SASL_PLAINTEXT",
    ]
    for path in (cqlshrc, kafka):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert password not in shell_script(env).replace(env["AIRFLOW_CONN_COVIDFLOW_KAFKA"], "")


def test_stack_credentials_prints_every_generated_login(tmp_path: Path, monkeypatch) -> None:
    from click.testing import CliRunner

    from covidflow.cli.stack import stack
    from covidflow.stack.credentials import local_secret
    from covidflow.stack.services.airflow import passwords_file

    monkeypatch.setenv("COVIDFLOW_HOME", str(tmp_path))
    home = StackHome(tmp_path)
    passwords_file(home).parent.mkdir(parents=True, exist_ok=True)
    passwords_file(home).write_text('{"admin": "a-pass"}')  # Airflow writes it on its first start
    out = CliRunner().invoke(stack, ["credentials"]).output.splitlines()
    assert [line.split()[0] for line in out] == ["airflow", "s3", "kafka", "cassandra", "elasticsearch"]
    assert out[2].split()[1:4] == ["user", "covidflow", "password"]
    assert out[2].split()[4] == local_secret(home, "kafka_client_password")
    assert out[3].split()[1:] == ["user", "covidflow", "password", local_secret(home, "cassandra_password")]
    assert out[4].split()[1:] == ["user", "covidflow", "password", local_secret(home, "elasticsearch_password")]
