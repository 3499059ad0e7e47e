#!/usr/bin/env bash
# The image's entrypoint: Spark's driver settings from the environment, then Airflow's own entrypoint.
set -euo pipefail
bash /opt/covidflow-docker/spark-defaults.sh
exec /entrypoint "$@"
