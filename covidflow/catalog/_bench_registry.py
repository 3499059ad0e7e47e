"""Start-up cost of the ISO 3166-2 subdivisions: ``python -m covidflow.catalog._bench_registry [RUNS]``.

Exports the committed tree (``git archive HEAD``) twice into a temporary folder, removes
``include/locations/subdivisions.csv`` from one copy, and runs ``sources list`` and two ``sources preview``
commands from each copy in turn, RUNS times (default 11), bypassing the virtualenv's editable install. Prints the
median wall and CPU time (user + system of the child) per command and the ratio with/without. The figures in
docs/locations.md come from this script; CPU time is the one to read on a shared machine.
"""

from __future__ import annotations

import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from covidflow import PROJECT_ROOT

JHU = "include/samples/jhu_csse_time_series_global/time_series_covid19_confirmed_global_FR-DE-IT-ES-BE-CH-LU-KR.csv"
VACSI = "include/samples/spf_vacsi/vacsi-dep.csv"
COMMANDS = {
    "sources list": ["sources", "list"],
    "sources preview spf_vacsi": ["sources", "preview", "spf_vacsi", VACSI, "-n", "1"],
    "sources preview jhu": ["sources", "preview", "jhu_csse_time_series_global", JHU, "-n", "1"],
}
LAUNCH = """import sys
root = sys.argv[1]
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
sys.path.insert(0, root)
from covidflow.cli import cli
assert __import__("covidflow").__file__.startswith(root)
cli(sys.argv[2:], prog_name="covidflow")
"""


def _run(tree: Path, args: list[str]) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", LAUNCH, str(tree), *args], cwd=tree, check=True, capture_output=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def main(runs: int = 11) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        trees = {"without": Path(tmp) / "without", "with": Path(tmp) / "with"}
        for tree in trees.values():
            tree.mkdir()
            archive = subprocess.run(["git", "archive", "HEAD"], cwd=PROJECT_ROOT, check=True, capture_output=True)
            subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
        (trees["without"] / "include" / "locations" / "subdivisions.csv").unlink()
        for label, args in COMMANDS.items():
            wall: dict[str, list[float]] = {k: [] for k in trees}
            cpu: dict[str, list[float]] = {k: [] for k in trees}
            for _ in range(runs):
                for name, tree in trees.items():
                    w, c = _run(tree, args)
                    wall[name].append(w)
                    cpu[name].append(c)
            w0, w1 = statistics.median(wall["without"]), statistics.median(wall["with"])
            c0, c1 = statistics.median(cpu["without"]), statistics.median(cpu["with"])
            print(f"{label}: CPU {c0:.3f} s -> {c1:.3f} s (ratio {c1 / c0:.2f}); "
                  f"wall {w0:.3f} s -> {w1:.3f} s (ratio {w1 / w0:.2f}); medians of {runs}")  # fmt: skip


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 11)
