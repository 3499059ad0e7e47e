#!/usr/bin/env bash
# Run a Spark daemon (master, worker) from the pyspark installed in the image, as the local stack does: the
# executors the worker starts then share the driver's Python, packages and project (same image).
set -euo pipefail
SPARK_HOME="$(python -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')"
export SPARK_HOME
exec "$SPARK_HOME/bin/spark-class" "$@"
