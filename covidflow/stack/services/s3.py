"""An S3-compatible object store on 127.0.0.1:9000: s3proxy (Apache-2.0) with its on-disk backend.

MinIO is AGPL, moto keeps objects only in memory; s3proxy stores each object as a plain file under
``data/s3/<bucket>/<key>`` (ETag and metadata in extended attributes), so the landing zone survives restarts.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from covidflow import settings
from covidflow.stack.credentials import local_secret
from covidflow.stack.fetch import MavenCoord, maven_file
from covidflow.stack.home import StackHome
from covidflow.stack.service import HOST, ProcessSpec, Service, java_home

log = logging.getLogger(__name__)

# 4.x runs on Java 17 and replaced jclouds' deprecated filesystem provider with its own NIO.2 store; the
# jar-with-dependencies is one self-contained, sha1-verified download (about 55 MB), no mvn needed.
S3PROXY = MavenCoord("org.gaul", "s3proxy", "4.1.0", "jar-with-dependencies")

#: Names of the local secrets holding the S3 access key and secret key (see covidflow.stack.credentials).
ACCESS_KEY_SECRET = "s3_access_key"
SECRET_KEY_SECRET = "s3_secret_key"


def s3_credentials(home: StackHome) -> tuple[str, str]:
    """(access key, secret key) of the local S3 server, generated once per machine."""
    return local_secret(home, ACCESS_KEY_SECRET), local_secret(home, SECRET_KEY_SECRET)


def s3_client(home: StackHome | None = None, timeout: float = 10.0, retries: int = 3) -> Any:
    """A boto3 S3 client for the local server: its endpoint, region, keys and path-style addressing."""
    import boto3
    from botocore.config import Config

    access_key, secret_key = s3_credentials(home or StackHome.from_env())
    return boto3.client(
        "s3",
        endpoint_url=settings.S3_ENDPOINT,
        region_name=settings.S3_REGION,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        config=Config(
            s3={"addressing_style": "path"},
            connect_timeout=timeout,
            read_timeout=timeout,
            retries={"max_attempts": retries, "mode": "standard"},
        ),
    )


def s3proxy_properties(base_dir: Path, access_key: str, secret_key: str, port: int = settings.S3_PORT) -> str:
    """s3proxy's configuration: loopback only, AWS signatures v2 or v4 required, objects under ``base_dir``."""
    values = {
        "s3proxy.endpoint": f"http://{HOST}:{port}",
        "s3proxy.authorization": "aws-v2-or-v4",
        "s3proxy.identity": access_key,
        "s3proxy.credential": secret_key,
        "jclouds.provider": "filesystem-nio2",
        "jclouds.filesystem.basedir": str(base_dir),
    }
    return "".join(f"{key}={value}\n" for key, value in values.items())


class S3Service(Service):
    name = "s3"
    port = settings.S3_PORT
    start_timeout = 60.0
    heap = "256m"

    def __init__(self) -> None:
        self._home: StackHome | None = None

    def fetch(self, home: StackHome) -> None:
        maven_file(S3PROXY, home.cache)

    def _properties_file(self, home: StackHome) -> Path:
        return home.conf_dir(self.name) / "s3proxy.conf"

    def prepare(self, home: StackHome) -> None:
        access_key, secret_key = s3_credentials(home)
        path = self._properties_file(home)
        tmp = path.with_suffix(".tmp")
        # It holds the secret key: readable by its owner only, from the moment it exists.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(s3proxy_properties(home.data_dir(self.name), access_key, secret_key, self.port))
        tmp.replace(path)

    def processes(self, home: StackHome) -> list[ProcessSpec]:
        # Every Runner path asks for processes first: remember the home so is_healthy signs with its keys.
        self._home = home
        jar = home.cache / "maven-files" / S3PROXY.filename  # where maven_file puts it; nothing fetched here
        argv = [
            str(java_home(17) / "bin" / "java"),
            f"-Xms{self.heap}",
            f"-Xmx{self.heap}",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            "-jar",
            str(jar),
            "--properties",
            str(self._properties_file(home)),
        ]
        return [ProcessSpec(name=self.name, argv=argv, env={"LOG_LEVEL": "info"})]

    def is_healthy(self) -> bool:
        """An authenticated ListBuckets answers: the server is up and accepts our keys."""
        try:
            s3_client(self._home, timeout=2.0, retries=1).list_buckets()
            return True
        except Exception:
            return False

    def after_start(self, home: StackHome) -> None:
        ensure_bucket(s3_client(home), settings.LANDING_BUCKET)


def ensure_bucket(client: Any, bucket: str) -> None:
    """Create ``bucket`` unless it exists; safe to repeat."""
    from botocore.exceptions import ClientError

    try:
        client.head_bucket(Bucket=bucket)
        return
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket", "NotFound"):
            raise
    try:
        client.create_bucket(Bucket=bucket)
        log.info("s3: created bucket %s", bucket)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "BucketAlreadyOwnedByYou":
            raise
