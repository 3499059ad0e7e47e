"""scripts/audit_report.py: the dependency audit's verdict, run as CI runs it, on pip-audit-shaped reports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from covidflow import PROJECT_ROOT

SCRIPT = PROJECT_ROOT / "scripts" / "audit_report.py"


def run(tmp_path: Path, deps: list[dict] | None, stderr: str = "") -> tuple[int, str]:
    report, err = tmp_path / "report.json", tmp_path / "err.txt"
    if deps is not None:
        report.write_text(json.dumps({"dependencies": deps, "fixes": []}))
    err.write_text(stderr)
    proc = subprocess.run([sys.executable, str(SCRIPT), str(report), str(err), "pypi"], capture_output=True, text=True)
    return proc.returncode, proc.stdout


def test_a_known_vulnerability_fails(tmp_path: Path) -> None:
    deps = [
        {"name": "jinja2", "version": "3.1.2", "vulns": [{"id": "GHSA-h5c8-rqwp-cp95", "fix_versions": ["3.1.3"]}]},
        {"name": "six", "version": "1.16.0", "vulns": []},
    ]
    status, out = run(tmp_path, deps)
    assert status == 1
    assert "VULNERABLE jinja2==3.1.2: GHSA-h5c8-rqwp-cp95 (fixed in: 3.1.3)" in out
    assert "audit (pypi): 2 pinned, 2 audited, 0 not audited, 1 vulnerable" in out


def test_a_clean_full_audit_passes(tmp_path: Path) -> None:
    status, out = run(tmp_path, [{"name": "six", "version": "1.16.0", "vulns": []}])
    assert (status, out.strip()) == (0, "audit (pypi): 1 pinned, 1 audited, 0 not audited, 0 vulnerable")


def test_a_partial_audit_fails(tmp_path: Path) -> None:
    deps = [{"name": "six", "version": "1.16.0", "vulns": []}, {"name": "a2wsgi", "skip_reason": "not found"}]
    status, out = run(tmp_path, deps)
    assert status == 1 and "NOT AUDITED a2wsgi: not found" in out


def test_an_audit_that_reached_nothing_is_reported_as_not_run(tmp_path: Path) -> None:
    reason = "Dependency not found on PyPI and could not be audited: a2wsgi (1.10.10)"
    status, out = run(tmp_path, [{"name": "a2wsgi", "skip_reason": reason}])
    assert status == 3 and f"audit NOT RUN: the service answered for none of the packages; first: {reason}" in out


def test_an_unreachable_service_is_not_run_and_shows_the_error(tmp_path: Path) -> None:
    status, out = run(tmp_path, None, "Traceback...\nConnectionError: Failed to resolve 'api.osv.dev'")
    assert status == 3 and "could not reach its service" in out and "Failed to resolve 'api.osv.dev'" in out


def test_any_other_missing_report_fails(tmp_path: Path) -> None:
    status, out = run(tmp_path, None, "ERROR: Invalid requirement: 'pkg==='")
    assert status == 1 and "audit FAILED: pip-audit (pypi) produced no report" in out


def test_skips_for_another_reason_are_a_failed_audit_not_a_skipped_one(tmp_path: Path) -> None:
    status, out = run(tmp_path, [{"name": "local-pkg", "skip_reason": "could not parse version"}])
    assert status == 1 and "NOT AUDITED local-pkg: could not parse version" in out


def test_an_empty_report_fails(tmp_path: Path) -> None:
    assert run(tmp_path, [])[0] == 1
