#!/usr/bin/env bash
# One-shot set-up of the compose stack's Airflow: migrate the metadata database, then create what the
# pipeline expects to exist (the landing bucket). Safe to run again.
set -euo pipefail
airflow db migrate
python /opt/covidflow-docker/init.py
