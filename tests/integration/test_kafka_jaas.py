"""The JVM Kafka client (the Spark Kafka source's) parses exactly the SASL login covidflow.clients writes for it.

An integration test: it runs the connector jars the stack fetched, with the JDK the stack runs on.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from covidflow import clients, settings

pytestmark = pytest.mark.integration

JAAS_PARSER = """
import java.util.Map;
import javax.security.auth.login.AppConfigurationEntry;
import org.apache.kafka.common.config.types.Password;
import org.apache.kafka.common.security.JaasContext;

public class Jaas {
    public static void main(String[] args) throws Exception {
        String line = new String(System.in.readAllBytes(), java.nio.charset.StandardCharsets.UTF_8);
        JaasContext context = JaasContext.loadClientContext(Map.of("sasl.jaas.config", new Password(line)));
        AppConfigurationEntry entry = context.configurationEntries().get(0);
        System.out.println(entry.getLoginModuleName());
        System.out.println(entry.getOptions().get("username"));
        System.out.println(entry.getOptions().get("password"));
    }
}
"""


def test_the_jvm_kafka_client_reads_back_exactly_the_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """The JAAS line goes through the Kafka client's own parser (the jars the job is submitted with), with a password
    full of quotes, backslashes, a semicolon and an equals sign; the line reaches the JVM on stdin, not as an
    argument. The connector jars are the ones ``covidflow stack up spark`` cached (no download here)."""
    from covidflow.stack.home import StackHome
    from covidflow.stack.service import java_home
    from covidflow.stack.services.spark import kafka_connector_jars, spark_home, spark_version

    home = StackHome.from_env()
    manifest = home.cache / "maven" / f"spark-sql-kafka-{spark_version()}" / "manifest.json"
    assert manifest.exists(), f"{manifest} is missing: run `covidflow stack up spark` (it fetches the connector)"
    classpath = [*map(str, kafka_connector_jars(home)), str(spark_home() / "jars" / "*")]  # slf4j from Spark's jars
    secret = 'p"a\\ss; w=rd \\" end'
    extra = {"bootstrap.servers": "b1.example:9093", "security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512",
             "sasl.username": "covidflow", "sasl.password": secret}  # fmt: skip
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{settings.CONN_KAFKA.upper()}", json.dumps({"conn_type": "kafka", "extra": extra})
    )
    source = tmp_path / "Jaas.java"
    source.write_text(JAAS_PARSER, encoding="utf-8")
    jaas = clients.kafka_spark_options()["kafka.sasl.jaas.config"]
    java = str(java_home(17) / "bin" / "java")
    out = subprocess.run([java, "-cp", ":".join(classpath), str(source)], input=jaas, capture_output=True,
                         text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.splitlines() == ["org.apache.kafka.common.security.scram.ScramLoginModule", "covidflow", secret]
