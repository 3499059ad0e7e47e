"""Create the landing bucket through the same Airflow connection the DAGs use (covidflow_s3). Idempotent."""

from __future__ import annotations

import time

from airflow.providers.amazon.aws.hooks.s3 import S3Hook

from covidflow import settings


def main() -> None:
    hook = S3Hook(aws_conn_id=settings.CONN_S3)
    for attempt in range(30):
        try:
            if not hook.check_for_bucket(settings.LANDING_BUCKET):
                hook.create_bucket(bucket_name=settings.LANDING_BUCKET, region_name=settings.S3_REGION)
                print(f"init: created bucket {settings.LANDING_BUCKET}")
            else:
                print(f"init: bucket {settings.LANDING_BUCKET} exists")
            return
        except Exception as exc:  # S3 may still be starting behind its healthcheck
            print(f"init: S3 not ready ({exc}); retry {attempt + 1}/30")
            time.sleep(2)
    raise SystemExit("init: could not create the landing bucket")


if __name__ == "__main__":
    main()
