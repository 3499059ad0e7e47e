#!/usr/bin/env bash
# Healthy when the broker answers an authenticated ApiVersions request on the in-network SASL listener.
# The client properties hold a password: they are written with mode 600 inside the container only.
set -euo pipefail
props=/tmp/covidflow-healthcheck.properties
umask 077
cat > "$props" <<PROPS
security.protocol=SASL_PLAINTEXT
sasl.mechanism=PLAIN
sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="${COVIDFLOW_KAFKA_USERNAME}" password="${COVIDFLOW_KAFKA_PASSWORD}";
PROPS
exec /opt/kafka/bin/kafka-broker-api-versions.sh --bootstrap-server localhost:19092 --command-config "$props" >/dev/null
