"""On-call tools against the local stack: the real ``airflow`` CLI, ``cqlsh`` and Kafka's console tools.

The stack's settings live in the environment of its service processes (``airflow_env``), so a shell needs the
same variables to reach them. ``covidflow stack env`` prints them as ``export`` lines, plus shell functions for
Kafka's tools (their jars have no start scripts on Maven Central); ``covidflow stack tools`` fetches what is not
part of the stack: cqlsh from PyPI in its own virtualenv (its pins differ from ours), and Kafka's tools jar with
its dependencies from Maven Central, both under ``$COVIDFLOW_HOME/cache``. See docs/operations.md.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from covidflow import settings
from covidflow.stack.credentials import write_private
from covidflow.stack.home import StackHome

CQLSH_VERSION = "6.2.2"  # Apache cqlsh packaged on PyPI; 6.2 is the shell of Cassandra 5.0
KAFKA_TOOLS_CLASSPATH = "kafka-tools-4.3.1"

#: shell command -> (Java main class, the option that names the broker, the option that names the client config)
KAFKA_TOOLS: dict[str, tuple[str, str, str]] = {
    "kafka-topics": ("org.apache.kafka.tools.TopicCommand", "--bootstrap-server", "--command-config"),
    "kafka-consumer-groups": (
        "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand", "--bootstrap-server", "--command-config"
    ),
    "kafka-console-consumer": ("org.apache.kafka.tools.consumer.ConsoleConsumer", "--bootstrap-server",
                               "--command-config"),
    "kafka-console-producer": ("org.apache.kafka.tools.ConsoleProducer", "--bootstrap-server", "--command-config"),
    "kafka-get-offsets": ("org.apache.kafka.tools.GetOffsetShell", "--bootstrap-server", "--command-config"),
    "kafka-configs": ("kafka.admin.ConfigCommand", "--bootstrap-server", "--command-config"),
}  # fmt: skip

LOG4J2 = """status = error
appender.console.type = Console
appender.console.name = STDERR
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{HH:mm:ss} %-5p %m%n
rootLogger.level = warn
rootLogger.appenderRef.stderr.ref = STDERR
"""


def tools_dir(home: StackHome) -> Path:
    return home.cache / "tools"


def cqlsh_bin(home: StackHome) -> Path:
    return tools_dir(home) / "cqlsh" / "bin" / "cqlsh"


def kafka_classpath(home: StackHome) -> str:
    """Kafka's tools jar and its dependencies, then the broker's jars (kafka-configs lives there)."""
    from covidflow.stack.services.kafka import CLASSPATH_NAME

    return f"{home.cache / 'maven' / KAFKA_TOOLS_CLASSPATH}/*:{home.cache / 'maven' / CLASSPATH_NAME}/*"


def log4j_conf(home: StackHome) -> Path:
    return home.conf_dir("kafka-tools") / "log4j2.properties"


def install_tools(home: StackHome) -> list[str]:
    """Fetch cqlsh and Kafka's tools once (idempotent); returns one line per tool saying what was done."""
    from covidflow.stack.fetch import MavenCoord, maven_classpath
    from covidflow.stack.services.kafka import COORDS, KAFKA_VERSION

    done = []
    jars = maven_classpath(
        KAFKA_TOOLS_CLASSPATH, (MavenCoord("org.apache.kafka", "kafka-tools", KAFKA_VERSION), *COORDS[1:]), home.cache
    )
    log4j_conf(home).write_text(LOG4J2)
    done.append(f"kafka tools: {len(jars)} jars in {home.cache / 'maven' / KAFKA_TOOLS_CLASSPATH}")
    venv = tools_dir(home) / "cqlsh"
    if not cqlsh_bin(home).exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check"]
        subprocess.run([*pip, f"cqlsh=={CQLSH_VERSION}"], check=True)
        done.append(f"cqlsh {CQLSH_VERSION}: installed in {venv}")
    else:
        done.append(f"cqlsh: already in {venv}")
    return done


def write_login_files(home: StackHome) -> tuple[Path, Path]:
    """cqlsh's cqlshrc and the Kafka tools' client properties, with the logins of this home's connections; readable
    by their owner only, rewritten at every call (the secrets are the stack's, ``covidflow.stack.credentials``)."""
    from covidflow.clients import kafka_spark_options
    from covidflow.stack.connections import connections

    conns, conf = connections(home), home.conf_dir("oncall")
    cassandra = conns[settings.CONN_CASSANDRA]
    cqlshrc = conf / "cqlshrc"
    write_private(cqlshrc, f"[authentication]\nusername = {cassandra['login']}\npassword = {cassandra['password']}\n")
    # The JVM tools take the JVM client's settings: the Spark Kafka source's options without their prefix.
    jvm = {k.removeprefix("kafka."): v for k, v in kafka_spark_options(conns[settings.CONN_KAFKA]["extra"]).items()}
    jvm.pop("bootstrap.servers")  # given on the command line
    kafka = conf / "kafka-client.properties"
    write_private(kafka, "".join(f"{key}={value}\n" for key, value in sorted(jvm.items())))
    return cqlshrc, kafka


def oncall_env(home: StackHome) -> dict[str, str]:
    """Every variable a shell needs: Airflow's own environment (AIRFLOW_HOME, AIRFLOW__*, AIRFLOW_CONN_*, PATH
    with the venv first) and the other tools' endpoints."""
    from covidflow.stack.service import java_home
    from covidflow.stack.services.airflow import airflow_env

    env = airflow_env(home)
    cqlshrc, kafka_client = write_login_files(home)
    env["PATH"] = os.pathsep.join([str(cqlsh_bin(home).parent), env["PATH"]])
    try:
        java = str(java_home(17) / "bin" / "java")
    except RuntimeError:
        java = "java"
    env.update(
        {
            "CQLSH_HOST": settings.CASSANDRA_HOST,
            "CQLSH_PORT": str(settings.CASSANDRA_PORT),
            "KAFKA_BOOTSTRAP_SERVERS": settings.KAFKA_BOOTSTRAP,
            "COVIDFLOW_CQLSHRC": str(cqlshrc),
            "COVIDFLOW_KAFKA_CLIENT_CONFIG": str(kafka_client),
            "COVIDFLOW_KAFKA_CLASSPATH": kafka_classpath(home),
            "COVIDFLOW_JAVA": java,
            "KAFKA_LOG4J_OPTS": f"-Dlog4j2.configurationFile={log4j_conf(home)}",
            # the airflow CLI logs this warning on stdout, which breaks `-o json` output
            "PYTHONWARNINGS": "ignore:Could not import graphviz",
        }
    )
    return env


def shell_script(env: Mapping[str, str]) -> str:
    """``export`` lines and the Kafka tool functions, for ``eval "$(covidflow stack env)"`` in bash or zsh."""
    lines = [f"export {name}={shlex.quote(value)}" for name, value in sorted(env.items())]
    lines.append('cqlsh() { command cqlsh --cqlshrc "$COVIDFLOW_CQLSHRC" "$@"; }')
    for command, (main, broker, client_config) in KAFKA_TOOLS.items():
        lines.append(
            f'{command}() {{ "$COVIDFLOW_JAVA" $KAFKA_LOG4J_OPTS -cp "$COVIDFLOW_KAFKA_CLASSPATH" {main} '
            f'{broker} "$KAFKA_BOOTSTRAP_SERVERS" {client_config} "$COVIDFLOW_KAFKA_CLIENT_CONFIG" "$@"; }}'
        )
    return "\n".join(lines) + "\n"
