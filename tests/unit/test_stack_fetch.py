"""Downloads are verified before use: checked against a local HTTP 'repository' (real HTTP, no mocks)."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from covidflow.stack import fetch
from covidflow.stack.fetch import FetchError, MavenCoord, maven_file, unpack_zip

COORD = MavenCoord.parse("org.example:thing:1.0")


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    root = tmp_path / "repo"
    handler = partial(SimpleHTTPRequestHandler, directory=str(root))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setattr(fetch, "MAVEN_URL", f"http://127.0.0.1:{server.server_port}")
    yield root / "org/example/thing/1.0"
    server.shutdown()


def publish(folder: Path, body: bytes, sha1: str | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "thing-1.0.jar").write_bytes(body)
    (folder / "thing-1.0.jar.sha1").write_text((sha1 or hashlib.sha1(body).hexdigest()) + "\n")


def test_coordinates_parse_with_classifier_and_extension() -> None:
    coord = MavenCoord.parse("org.elasticsearch.distribution.integ-test-zip:elasticsearch:8.19.21@zip")
    assert coord.filename == "elasticsearch-8.19.21.zip"
    assert coord.url.endswith(
        "/org/elasticsearch/distribution/integ-test-zip/elasticsearch/8.19.21/elasticsearch-8.19.21.zip"
    )
    assert MavenCoord.parse("a:b:1:bin@tar.gz").filename == "b-1-bin.tar.gz"
    with pytest.raises(ValueError, match="bad Maven coordinate"):
        MavenCoord.parse("just-a-name")


def test_download_is_checked_against_the_published_sha1(repo: Path, tmp_path: Path) -> None:
    publish(repo, b"real jar bytes")
    path = maven_file(COORD, tmp_path / "cache")
    assert path.read_bytes() == b"real jar bytes"


def test_a_download_that_does_not_match_its_sha1_is_refused(repo: Path, tmp_path: Path) -> None:
    publish(repo, b"tampered bytes", sha1="0" * 40)
    with pytest.raises(FetchError, match="does not match the published"):
        maven_file(COORD, tmp_path / "cache")
    assert not (tmp_path / "cache/maven-files/thing-1.0.jar").exists()


def test_a_corrupt_cached_file_is_fetched_again(repo: Path, tmp_path: Path) -> None:
    publish(repo, b"good")
    cached = maven_file(COORD, tmp_path / "cache")
    cached.write_bytes(b"goo")  # a truncated cache, as after a crash mid-copy
    assert maven_file(COORD, tmp_path / "cache").read_bytes() == b"good"


def test_a_missing_artifact_names_the_url(repo: Path, tmp_path: Path) -> None:
    with pytest.raises(FetchError, match=r"download failed: http://127\.0\.0\.1:\d+/org/example/thing/1\.0/"):
        maven_file(COORD, tmp_path / "cache")


def test_unpack_refuses_entries_that_escape_the_folder(tmp_path: Path) -> None:
    import zipfile

    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("../outside.txt", "x")
    with pytest.raises(FetchError, match="escapes the target folder"):
        unpack_zip(archive, tmp_path / "out")
    assert not (tmp_path / "outside.txt").exists()
