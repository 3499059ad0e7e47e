"""Security rules enforced in code: safe YAML everywhere, hooks inside the package, untrusted S3 keys, bombs.

docker-compose authentication, loopback port bindings and the .env rule are covered by tests/unit/test_compose.py;
this file covers the rest of issue 8's security list, plus a repository-wide scan for committed secret literals.
"""

from __future__ import annotations

import ast
import gzip
import io
import re
import subprocess
import zipfile
from pathlib import Path

import pytest

from covidflow import PROJECT_ROOT
from covidflow.catalog.specs import SpecError, load_spec
from covidflow.land.keys import UnsafeObjectKey, check_object_key, local_path_for
from covidflow.land.objects import LandedObject, matches, select_new, unsafe_keys
from covidflow.normalise.core import _load_hook
from covidflow.read import ReaderError, read_records
from covidflow.sources.hooks import drop_blank_rows

GOOD_SPEC = PROJECT_ROOT / "include" / "sources" / "spf_vacsi.yaml"


def _spec_copy(tmp_path: Path, extra: str) -> Path:
    path = tmp_path / "spf_vacsi.yaml"
    path.write_text(GOOD_SPEC.read_text(encoding="utf-8") + extra, encoding="utf-8")
    return path


# -- spec loading ---------------------------------------------------------------------------------------------


def test_python_object_tag_is_refused_and_never_constructed(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    spec = _spec_copy(tmp_path, f'quirks: !!python/object/apply:os.system ["touch {marker}"]\n')
    with pytest.raises(SpecError) as err:
        load_spec(spec)
    message = str(err.value)
    assert message.startswith(f"{spec}:")
    assert "YAML tag refused (specs are plain data): could not determine a constructor for the tag " in message
    assert "'tag:yaml.org,2002:python/object/apply:os.system'" in message
    assert not marker.exists()


def test_python_object_new_tag_is_refused(tmp_path: Path) -> None:
    spec = _spec_copy(tmp_path, "quirks: !!python/object:collections.OrderedDict {}\n")
    with pytest.raises(SpecError, match=r"python/object:collections\.OrderedDict"):
        load_spec(spec)


def test_the_unmodified_spec_loads(tmp_path: Path) -> None:
    assert load_spec(_spec_copy(tmp_path, "")).id == "spf_vacsi"


YAML_LOADS = {"load", "load_all", "unsafe_load", "unsafe_load_all", "full_load", "full_load_all"}


def _yaml_loads(path: Path) -> list[tuple[int, str]]:
    """(line, loader expression) of every yaml.load/load_all/unsafe_load/full_load call in one file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in YAML_LOADS
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "yaml"
        ):
            loader = next((ast.unparse(k.value) for k in node.keywords if k.arg == "Loader"), "")
            found.append((node.lineno, f"yaml.{node.func.attr}(Loader={loader})"))
    return found


def test_every_yaml_load_in_the_code_uses_a_safe_loader() -> None:
    safe = {"yaml.SafeLoader", "yaml.CSafeLoader", "_Loader"}
    files = [p for d in ("covidflow", "dags", "spark_jobs", "plugins") for p in (PROJECT_ROOT / d).rglob("*.py")]
    assert len(files) > 20
    bad = []
    for path in files:
        text = path.read_text(encoding="utf-8")
        for line, call in _yaml_loads(path):
            loader = call.split("Loader=")[1].rstrip(")")
            if loader not in safe:
                bad.append(f"{path.relative_to(PROJECT_ROOT)}:{line}: {call}")
            if loader == "_Loader":  # the module alias must be one of the safe loaders
                assert re.search(r'_Loader[^=\n]*= getattr\(yaml, "CSafeLoader", yaml\.SafeLoader\)', text), path
    assert bad == []


# -- hooks ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "hook",
    [
        "os.system",
        "subprocess.run",
        "covidflow.sources.hooks_evil.run",
        "covidflow.sources.hook.x",
        "/tmp/evil.run",
        "covidflow.sources.hooks.os.system",  # a module imported by hooks.py is not a hook
        "covidflow.sources.hooks._private",
    ],
)
def test_a_hook_outside_the_package_is_refused_by_the_loader(hook: str) -> None:
    with pytest.raises(ValueError, match=re.escape(f"hook {hook!r} must be a public function directly in")):
        _load_hook(hook)


@pytest.mark.parametrize("hook", ["covidflow.sources.hooks.no_such_hook", "covidflow.sources.hooks.Any"])
def test_a_hook_that_is_not_a_function_of_the_module_is_refused(hook: str) -> None:
    """``Any`` is imported by hooks.py for its annotations: callable, but only hooks.py's own functions count."""
    with pytest.raises(ValueError, match=re.escape(f"hook {hook!r}: no such function in covidflow.sources.hooks")):
        _load_hook(hook)


@pytest.mark.parametrize("hook", ["os.system", "covidflow.sources.hooks.Evil", "covidflow.sources.hooks..x"])
def test_a_hook_outside_the_package_is_refused_by_the_spec_schema(tmp_path: Path, hook: str) -> None:
    spec = _spec_copy(tmp_path, f"hook: {hook}\n")
    with pytest.raises(SpecError) as err:
        load_spec(spec)
    assert "hook: " in str(err.value)
    assert "does not match" in str(err.value)


def test_a_hook_inside_the_package_loads() -> None:
    assert _load_hook("covidflow.sources.hooks.drop_blank_rows") is drop_blank_rows


# -- S3 keys ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "why"),
    [
        ("../../etc/passwd", "path traversal"),
        ("spf/vacsi/../../etc/passwd", "path traversal"),
        ("spf/vacsi/./x.csv", "path traversal"),
        ("/etc/passwd", "absolute path"),
        ("spf/vacsi/..\\..\\x.csv", "backslash"),
        ("spf/vacsi/x\n.csv", "control characters"),
        ("other/x.csv", "not under the source prefix 'spf/vacsi/'"),
        ("spf/vacsi/sub/x.csv", "not a file directly under the prefix"),
        ("spf/vacsi/" + "a" * 1020, "longer than 1024 bytes"),
    ],
)
def test_a_malicious_key_is_rejected_with_a_clear_message(key: str, why: str) -> None:
    with pytest.raises(UnsafeObjectKey) as err:
        check_object_key(key, "spf/vacsi/")
    assert str(err.value).startswith(f"S3 key {key[:200]!r} rejected: ")
    assert why in str(err.value)


def test_a_plain_key_gives_its_file_name() -> None:
    assert check_object_key("spf/vacsi/vacsi-dep.csv", "spf/vacsi/") == "vacsi-dep.csv"


def test_the_ingest_selection_never_picks_a_traversal_key() -> None:
    objects = [
        LandedObject("b", "spf/vacsi/../../etc/passwd", "e1", 1, "2024-01-01T00:00:00+00:00"),
        LandedObject("b", "spf/vacsi/vacsi-dep.csv", "e3", 1, "2024-01-01T00:00:00+00:00"),
    ]
    assert not matches("spf/vacsi/../../etc/passwd", "spf/vacsi/", ["*"])
    assert [o.key for o in select_new(objects, set(), "spf/vacsi/", ["*"])] == ["spf/vacsi/vacsi-dep.csv"]


def test_a_dot_dot_name_under_the_prefix_is_refused_and_reported() -> None:
    objects = [
        LandedObject("b", "spf/vacsi/..", "e1", 1, "2024-01-01T00:00:00+00:00"),
        LandedObject("b", "spf/vacsi/bad\x07name.csv", "e2", 1, "2024-01-01T00:00:00+00:00"),
        LandedObject("b", "spf/vacsi/vacsi-dep.csv", "e3", 1, "2024-01-01T00:00:00+00:00"),
        LandedObject("b", "other/../x.csv", "e4", 1, "2024-01-01T00:00:00+00:00"),  # not this source's: not reported
    ]
    assert not matches("spf/vacsi/..", "spf/vacsi/", ["*"])
    assert [o.key for o in select_new(objects, set(), "spf/vacsi/", ["*"])] == ["spf/vacsi/vacsi-dep.csv"]
    assert unsafe_keys(objects, "spf/vacsi/") == [
        "S3 key 'spf/vacsi/..' rejected: path traversal ('..' or '.' segment)",
        "S3 key 'spf/vacsi/bad\\x07name.csv' rejected: contains control characters",
    ]


def test_a_local_path_never_escapes_its_base(tmp_path: Path) -> None:
    assert local_path_for(tmp_path, "spf/vacsi/x.csv") == (tmp_path / "spf" / "vacsi" / "x.csv").resolve()
    with pytest.raises(UnsafeObjectKey, match="path traversal"):
        local_path_for(tmp_path, "../../etc/passwd")


# -- bombs ------------------------------------------------------------------------------------------------------

BOMB_BYTES = 64 * 1024**2  # 64 MiB of one byte: compresses about 1000:1


def _zip_bomb() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("data.csv", b"a;b\n" + b"0" * BOMB_BYTES)
    return buf.getvalue()


def test_a_zip_bomb_is_rejected_with_a_clear_message() -> None:
    data = _zip_bomb()
    assert len(data) < BOMB_BYTES / 500
    with pytest.raises(ReaderError) as err:
        list(read_records(io.BytesIO(data), "csv", {"delimiter": ";"}, name="spf/vacsi/bomb.zip"))
    assert str(err.value) == "spf/vacsi/bomb.zip: zip member data.csv ratio above max_compression_ratio=100"


def test_a_gzip_bomb_is_rejected_while_streaming() -> None:
    data = gzip.compress(b"a;b\n" + b"0" * BOMB_BYTES, compresslevel=9)
    with pytest.raises(ReaderError) as err:
        list(read_records(io.BytesIO(data), "csv", {"delimiter": ";"}, name="spf/vacsi/bomb.csv.gz"))
    assert str(err.value) == (
        "spf/vacsi/bomb.csv.gz line 3: gzip compression ratio above max_compression_ratio=100 (zip bomb?)"
    )


def test_the_decompressed_size_cap_holds_without_a_ratio() -> None:
    data = gzip.compress(b"a;b\n" + b"1;2\n" * 100_000)
    options = {"delimiter": ";", "max_decompressed_bytes": 100_000}
    with pytest.raises(ReaderError) as err:
        list(read_records(io.BytesIO(data), "csv", options, name="k.csv.gz"))
    assert str(err.value) == "k.csv.gz line 16385: gzip decompresses to more than max_decompressed_bytes=100000"


# -- committed secrets ------------------------------------------------------------------------------------------

SECRET_PATTERNS = {
    "AWS access key id": re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),
    "private key": re.compile(r"-----BEGIN (RSA |EC |DSA |OPENSSH )?PRIVATE KEY-----"),
    "password in a URL": re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s/:@'\"{}$<>]+:(?!\$\{)[^\s/@'\"{}$<>]{4,}@"),
    "Slack/GitHub token": re.compile(r"\b(xox[abpr]-[0-9A-Za-z-]{10,}|gh[pousr]_[0-9A-Za-z]{30,})\b"),
}


def test_no_secret_literal_is_committed() -> None:
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    assert len(listed) > 100
    found = []
    for name in listed:
        path = PROJECT_ROOT / name
        if not path.is_file() or path.stat().st_size > 2_000_000 or path.suffix in {".csv", ".json", ".parquet"}:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for what, pattern in SECRET_PATTERNS.items():
            for match in pattern.finditer(text):
                found.append(f"{name}: {what}: {match.group(0)[:40]}")
    assert found == []
