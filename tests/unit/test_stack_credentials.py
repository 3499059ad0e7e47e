"""covidflow.stack.credentials: local secrets and the private files that hold them."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from covidflow.stack.credentials import local_secret, write_private
from covidflow.stack.home import StackHome


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_write_private_creates_an_owner_only_file(tmp_path: Path) -> None:
    path = tmp_path / "secret.properties"
    write_private(path, "password=s3cret\n")
    assert _mode(path) == 0o600
    assert path.read_text() == "password=s3cret\n"


def test_write_private_narrows_an_existing_readable_file(tmp_path: Path) -> None:
    path = tmp_path / "secret.properties"
    path.write_text("old, longer content\n")
    path.chmod(0o644)
    write_private(path, "new\n")
    assert _mode(path) == 0o600
    assert path.read_text() == "new\n"


def test_write_private_is_0600_before_it_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "secret.properties"
    path.write_text("old\n")
    path.chmod(0o644)
    modes_at_write = []
    write_text = Path.write_text

    def spy(self: Path, text: str) -> int:
        modes_at_write.append(_mode(self))
        return write_text(self, text)

    monkeypatch.setattr(Path, "write_text", spy)
    write_private(path, "new\n")
    assert modes_at_write == [0o600]


def test_local_secret_is_stable_and_kept_private(tmp_path: Path) -> None:
    home = StackHome(tmp_path)
    first = local_secret(home, "one")
    assert local_secret(home, "one") == first
    second = local_secret(home, "two")
    secrets_json = home.conf / "secrets.json"
    assert json.loads(secrets_json.read_text()) == {"one": first, "two": second}
    assert _mode(secrets_json) == 0o600
    assert not secrets_json.with_suffix(".tmp").exists()
