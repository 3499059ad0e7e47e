"""One Airflow ingest DAG per source spec in include/sources/ (ingest_<source_id>): S3 landing -> Kafka raw topic.

Thin on purpose: the structure is built by covidflow.publish.dag_factory, the work runs inside the tasks.
A broken spec shows as one import error for this file naming the spec; the other sources' DAGs still load.
"""

from __future__ import annotations

from covidflow.publish.dag_factory import build_all

globals().update(build_all())
