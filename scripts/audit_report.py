"""Read pip-audit's JSON report and tell "vulnerable" from "not audited"; exit 0, 1 or 3 (see scripts/audit.sh).

pip-audit's own exit status mixes the two, and with PyPI's per-version API out of reach every package is
"skipped": without this, an audit that never ran looks like a clean one. Stdlib only, so it runs with any
Python 3.11 outside the project's virtualenv.

    python scripts/audit_report.py REPORT.json STDERR.txt SERVICE
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

CLEAN, FAILED, NOT_RUN = 0, 1, 3
#: What pip-audit says when the vulnerability data cannot be reached: only these make an audit "not run";
#: any other missing report (a bad requirement line, a crash) fails.
UNREACHABLE = ("NameResolutionError", "Failed to resolve", "ConnectionError", "Max retries exceeded", "timed out")
NOT_ON_SERVICE = "Dependency not found on PyPI"


def verdict(deps: list[dict], service: str) -> tuple[int, list[str]]:
    """Exit status and the lines to print for pip-audit's ``dependencies`` list."""
    skipped = [d for d in deps if d.get("skip_reason")]
    audited = [d for d in deps if not d.get("skip_reason")]
    vulnerable = [d for d in audited if d.get("vulns")]
    lines = [
        f"VULNERABLE {d['name']}=={d['version']}: {v['id']} (fixed in: {', '.join(v.get('fix_versions') or []) or '-'})"
        for d in vulnerable
        for v in d["vulns"]
    ]
    lines.append(
        f"audit ({service}): {len(deps)} pinned, {len(audited)} audited, {len(skipped)} not audited, "
        f"{len(vulnerable)} vulnerable"
    )
    if not deps:
        return FAILED, [*lines, "audit FAILED: the report lists no package (is constraints.txt empty?)"]
    if not audited and all(NOT_ON_SERVICE in d["skip_reason"] for d in skipped):
        reason = skipped[0]["skip_reason"]
        return NOT_RUN, [*lines, f"audit NOT RUN: the service answered for none of the packages; first: {reason}"]
    lines += [f"NOT AUDITED {d['name']}: {d['skip_reason']}" for d in skipped]
    return (FAILED if vulnerable or skipped else CLEAN), lines


def main(argv: list[str]) -> int:
    report, stderr, service = argv
    try:
        deps = json.loads(Path(report).read_text(encoding="utf-8"))["dependencies"]
    except (OSError, ValueError, KeyError):
        tail = Path(stderr).read_text(encoding="utf-8", errors="replace").strip().splitlines()[-5:]
        if any(marker in line for line in tail for marker in UNREACHABLE):
            print(f"audit NOT RUN: pip-audit ({service}) could not reach its service. Last lines:", *tail, sep="\n  ")
            return NOT_RUN
        print(f"audit FAILED: pip-audit ({service}) produced no report. Last lines:", *tail, sep="\n  ")
        return FAILED
    status, lines = verdict(deps, service)
    print(*lines, sep="\n")
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
