"""Print the fault matrix the integration tests recorded (tests/integration/fault_matrix.py) as a Markdown table."""

from __future__ import annotations

import json
import sys

from covidflow.stack.home import StackHome

COLUMNS = ("sent", "stored_cassandra", "stored_elasticsearch", "duplicated", "lost")


def main() -> int:
    path = StackHome.from_env().root / "reports" / "fault-matrix.json"
    if not path.exists():
        print(f"no fault matrix at {path}: run the integration tests first (make integration)", file=sys.stderr)
        return 1
    rows = json.loads(path.read_text())
    print("| fault | " + " | ".join(c.replace("_", " ") for c in COLUMNS) + " | measured |")
    print("| --- " * (len(COLUMNS) + 2) + "|")
    for name, row in rows.items():
        cells = [f"{row[c]:,}" if row[c] >= 0 else "n/a" for c in COLUMNS]  # -1: that store is not involved
        print(f"| {name} | " + " | ".join(cells) + f" | {row['measured_at'][:10]} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
