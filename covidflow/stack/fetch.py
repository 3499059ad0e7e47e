"""Downloads from Maven Central (and files shipped in PyPI wheels), verified before use.

Single artifacts are fetched over HTTPS and checked against the ``.sha1`` Maven Central publishes
beside them. Whole classpaths (a broker and its dependencies) are resolved by ``mvn`` with strict
checksums into ``cache/maven/<name>/``; a manifest of sizes lets later runs reuse them, and notice a
truncated or corrupt cache, without asking the network again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import tempfile
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape

log = logging.getLogger(__name__)

MAVEN_URL = os.environ.get("COVIDFLOW_MAVEN_URL", "https://repo1.maven.org/maven2").rstrip("/")


class FetchError(RuntimeError):
    """A download or resolution failed, or its result did not verify."""


@dataclass(frozen=True)
class MavenCoord:
    """``group:artifact:version[:classifier][@extension]``, plus exclusions for transitive resolution."""

    group: str
    artifact: str
    version: str
    classifier: str | None = None
    extension: str = "jar"
    exclusions: tuple[str, ...] = field(default=())

    @classmethod
    def parse(cls, text: str, exclusions: Sequence[str] = ()) -> MavenCoord:
        body, _, ext = text.partition("@")
        parts = body.split(":")
        if len(parts) not in (3, 4):
            raise ValueError(f"bad Maven coordinate {text!r}: want group:artifact:version[:classifier][@ext]")
        classifier = parts[3] if len(parts) == 4 else None
        return cls(parts[0], parts[1], parts[2], classifier, ext or "jar", tuple(exclusions))

    @property
    def filename(self) -> str:
        suffix = f"-{self.classifier}" if self.classifier else ""
        return f"{self.artifact}-{self.version}{suffix}.{self.extension}"

    @property
    def url(self) -> str:
        return f"{MAVEN_URL}/{self.group.replace('.', '/')}/{self.artifact}/{self.version}/{self.filename}"

    def __str__(self) -> str:
        text = f"{self.group}:{self.artifact}:{self.version}"
        if self.classifier:
            text += f":{self.classifier}"
        return text + ("" if self.extension == "jar" else f"@{self.extension}")


def sha1_of(path: Path) -> str:
    digest = hashlib.sha1()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _http_get(url: str, dest: Path) -> None:
    try:
        with urllib.request.urlopen(url, timeout=120) as response, dest.open("wb") as out:
            shutil.copyfileobj(response, out, 1 << 20)
    except OSError as exc:  # URLError is an OSError
        raise FetchError(f"download failed: {url}: {exc}") from exc


def maven_file(coord: MavenCoord, cache: Path) -> Path:
    """One artifact from Maven Central, sha1-verified; a cached copy is re-verified and replaced if corrupt."""
    target = cache / "maven-files" / coord.filename
    sha_file = target.with_name(target.name + ".sha1")
    if target.exists() and sha_file.exists():
        if sha1_of(target) == sha_file.read_text().split()[0]:
            return target
        log.warning("cached %s does not match its sha1: downloading it again", target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        part, part_sha = Path(tmp) / coord.filename, Path(tmp) / "sha1"
        log.info("downloading %s", coord.url)
        _http_get(coord.url + ".sha1", part_sha)
        _http_get(coord.url, part)
        expected = part_sha.read_text().split()[0].strip().lower()
        actual = sha1_of(part)
        if actual != expected:
            raise FetchError(f"{coord.url}: sha1 {actual} does not match the published {expected}")
        part.replace(target)
        sha_file.write_text(expected + "\n")
    return target


def _pom(name: str, coords: Sequence[MavenCoord]) -> str:
    deps = []
    for coord in coords:
        excl = "".join(
            "<exclusion><groupId>{}</groupId><artifactId>{}</artifactId></exclusion>".format(*map(escape, e.split(":")))
            for e in coord.exclusions
        )
        classifier = f"<classifier>{escape(coord.classifier)}</classifier>" if coord.classifier else ""
        deps.append(
            f"<dependency><groupId>{escape(coord.group)}</groupId><artifactId>{escape(coord.artifact)}"
            f"</artifactId><version>{escape(coord.version)}</version>{classifier}"
            f"<type>{escape(coord.extension)}</type>"
            f"{f'<exclusions>{excl}</exclusions>' if excl else ''}</dependency>"
        )
    return (
        '<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion>'
        f"<groupId>covidflow.stack</groupId><artifactId>{escape(name)}</artifactId><version>1</version>"
        f"<packaging>pom</packaging><dependencies>{''.join(deps)}</dependencies></project>"
    )


def maven_classpath(name: str, coords: Sequence[MavenCoord], cache: Path) -> list[Path]:
    """Resolve ``coords`` and their runtime dependencies into ``cache/maven/<name>`` and return the jars.

    The manifest records the exact coordinates asked for and each jar's size: a change of version
    or a damaged jar triggers a fresh resolution.
    """
    folder = cache / "maven" / name
    manifest = folder / "manifest.json"
    wanted = sorted(str(c) + "!" + ",".join(c.exclusions) for c in coords)
    if manifest.exists():
        recorded = json.loads(manifest.read_text())
        files = {folder / f: size for f, size in recorded["files"].items()}
        if recorded["coords"] == wanted and all(p.exists() and p.stat().st_size == s for p, s in files.items()):
            return sorted(files)
        log.warning("classpath %s is stale or damaged: resolving it again", name)
    if shutil.which("mvn") is None:
        raise FetchError("mvn is needed to resolve Java dependencies from Maven Central (apt-get install maven)")
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    with tempfile.TemporaryDirectory() as tmp:
        pom = Path(tmp) / "pom.xml"
        pom.write_text(_pom(name, coords))
        cmd = [
            "mvn",
            "-B",
            "-q",
            "-C",
            "-f",
            str(pom),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={folder}",
            "-DincludeScope=runtime",
        ]
        log.info("resolving %s from Maven Central: %s", name, ", ".join(map(str, coords)))
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            shutil.rmtree(folder, ignore_errors=True)
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-20:])
            raise FetchError(f"mvn could not resolve {name}:\n{tail}")
    files = {p.name: p.stat().st_size for p in folder.iterdir() if p.is_file()}
    if not files:
        raise FetchError(f"mvn resolved nothing for {name}")
    manifest.write_text(json.dumps({"coords": wanted, "files": files}, indent=1))
    return sorted(folder / f for f in files)


def unpack_zip(archive: Path, dest: Path) -> Path:
    """Unpack once into ``dest`` (marker file guards against half-unpacked trees); returns ``dest``."""
    marker = dest / ".unpacked-from"
    if marker.exists() and marker.read_text() == archive.name:
        return dest
    import zipfile

    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    with zipfile.ZipFile(archive) as zf:
        for member in zf.infolist():
            target = (dest / member.filename).resolve()
            if not target.is_relative_to(dest.resolve()):
                raise FetchError(f"{archive}: entry {member.filename!r} escapes the target folder")
            zf.extract(member, dest)
            mode = member.external_attr >> 16
            if mode:
                target.chmod(mode & 0o777)
    marker.write_text(archive.name)
    return dest
