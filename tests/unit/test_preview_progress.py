"""``sources preview`` on a big file: a progress line (rows, rows/s) on stderr, only when stderr is a terminal."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

from covidflow.catalog.specs import find_spec
from covidflow.normalise import preview


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def big_file(tmp_path: Path, rows: int) -> Path:
    path = tmp_path / "vacsi-dep.csv"
    body = "".join(f"75;2021-01-{1 + i % 28:02d};{i};{i}\n" for i in range(rows))
    path.write_text("dep;jour;n_dose1;n_cum_dose1\n" + body, encoding="utf-8")
    return path


def test_progress_lines_on_a_terminal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    terminal = Terminal()
    monkeypatch.setattr(preview.sys, "stderr", terminal)
    monkeypatch.setattr(preview, "PROGRESS_INTERVAL", 0.0)  # a line each time it is looked at: every chunk
    monkeypatch.setattr(preview, "PREVIEW_BATCH_ROWS", 1024)
    records, summary = preview.run_file(find_spec("spf_vacsi"), big_file(tmp_path, 5000), progress=True)
    records.drain()
    lines = [line.strip() for line in terminal.getvalue().split("\r") if line.strip()]
    assert [line.split(" rows read")[0] for line in lines] == ["1,024", "2,048", "3,072", "4,096", "5,000", "5,000"]
    assert all(re.fullmatch(r"[\d,]+ rows read, [\d,]+ rows/s( \(done\))?", line) for line in lines), lines
    assert lines[-1].endswith("(done)") and terminal.getvalue().endswith("\n") and summary.rows_read == 5000


def test_no_progress_when_stderr_is_not_a_terminal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pipe = io.StringIO()
    monkeypatch.setattr(preview.sys, "stderr", pipe)
    monkeypatch.setattr(preview, "PROGRESS_INTERVAL", 0.0)
    records, summary = preview.run_file(find_spec("spf_vacsi"), big_file(tmp_path, 300), progress=True)
    records.drain()
    assert pipe.getvalue() == "" and summary.records_out == 600


def test_no_progress_unless_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    terminal = Terminal()
    monkeypatch.setattr(preview.sys, "stderr", terminal)
    records, _ = preview.run_file(find_spec("spf_vacsi"), big_file(tmp_path, 300))
    assert len(list(records)) == 600 and terminal.getvalue() == ""
