"""Names shared by the stream job, its operator and the DAG; import-light so DAG parsing stays cheap."""

import os

from covidflow import settings

APP_NAME = "covidflow-normalise"
JOB_RELATIVE_PATH = "spark_jobs/normalise_stream.py"


def master_ui_url() -> str:
    """The Spark master's web UI (its /json/ lists the live applications): COVIDFLOW_SPARK_MASTER_UI (compose sets
    it), else the local stack's."""
    return os.environ.get("COVIDFLOW_SPARK_MASTER_UI", f"http://{settings.HOST}:{settings.SPARK_MASTER_UI_PORT}")
