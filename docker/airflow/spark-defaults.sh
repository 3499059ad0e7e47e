#!/usr/bin/env bash
# Spark's driver address for this container, from the environment: spark-submit (SparkSubmitOperator, client mode)
# starts the driver here and executors on other containers must reach it. The local stack's spark_env() binds
# drivers to 127.0.0.1 (SPARK_LOCAL_IP); spark.driver.bindAddress overrides that, spark.driver.host is the name
# executors connect to. Written to $COVIDFLOW_HOME/conf/spark, the SPARK_CONF_DIR spark_env() gives spark-submit.
# Without COVIDFLOW_SPARK_DRIVER_HOST nothing is written (a container that starts no driver).
set -euo pipefail
host="${COVIDFLOW_SPARK_DRIVER_HOST:-}"
[[ -n "$host" ]] || exit 0
bind="${COVIDFLOW_SPARK_DRIVER_BIND_ADDRESS:-0.0.0.0}"
for value in "$host" "$bind"; do
    [[ "$value" =~ ^[A-Za-z0-9.:-]+$ ]] || { echo "spark-defaults.sh: not a host name: $value" >&2; exit 1; }
done
conf_dir="${COVIDFLOW_HOME:?COVIDFLOW_HOME is not set}/conf/spark"
mkdir -p "$conf_dir"
printf 'spark.driver.host %s\nspark.driver.bindAddress %s\n' "$host" "$bind" > "$conf_dir/spark-defaults.conf"
