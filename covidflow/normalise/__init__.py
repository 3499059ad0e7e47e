"""Normalisation: raw records -> canonical observations. One pure-Python core, used by Airflow and Spark."""
