"""Names shared by the stream job, its operator and the DAG; import-light so DAG parsing stays cheap."""

APP_NAME = "covidflow-normalise"
JOB_RELATIVE_PATH = "spark_jobs/normalise_stream.py"
