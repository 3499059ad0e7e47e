"""How long Airflow's DagBag takes to parse the ingest DAG factory as specs grow (target: 100 specs < 2 s).

Phases, each in a fresh interpreter so no module is cached from another phase, all timing only the DagBag
(Airflow itself is imported before the clock starts):
  one_spec       the factory over 1 spec (fixed cost: imports of the factory, providers, spec schema)
  100_specs      the factory over 100 specs (copies of the real specs with new ids and prefixes)
  100_trivial    100 trivial DAG files (one EmptyOperator each): what 100 DAGs cost without specs

Run: .venv/bin/python bench/dag_parse.py [--specs 100] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ROOT / "include" / "sources"

FACTORY = """# airflow dag factory (bench)
from pathlib import Path
from covidflow.publish.dag_factory import build_all
globals().update(build_all(Path({specs!r})))
"""
TRIVIAL = """# airflow dag (bench)
from datetime import datetime
from airflow.sdk import DAG
from airflow.providers.standard.operators.empty import EmptyOperator
with DAG(dag_id="trivial_{i:03d}", schedule=None, start_date=datetime(2024, 1, 1), tags=["bench"]) as dag:
    EmptyOperator(task_id="noop")
"""
MEASURE = """
import json, sys, time
from airflow.dag_processing.dagbag import DagBag
started = time.perf_counter()
bag = DagBag(dag_folder=sys.argv[1])
elapsed = time.perf_counter() - started
print(json.dumps({"seconds": elapsed, "dags": len(bag.dag_ids), "errors": len(bag.import_errors)}))
"""


def make_specs(folder: Path, count: int) -> None:
    """``count`` valid specs: the real ones cycled, each with its own id and landing prefix."""
    real = sorted(SOURCES.glob("*.yaml"))
    folder.mkdir(parents=True)
    for i in range(count):
        src = real[i % len(real)]
        new_id = f"{src.stem}_{i:03d}"
        text = src.read_text(encoding="utf-8").replace(f"id: {src.stem}", f"id: {new_id}", 1)
        text = text.replace("{prefix: ", f"{{prefix: bench{i:03d}/", 1)
        (folder / f"{new_id}.yaml").write_text(text, encoding="utf-8")


def measure(dags: Path, env: dict[str, str]) -> dict:
    out = subprocess.run([sys.executable, "-c", MEASURE, str(dags)], env=env, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--specs", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dag-parse-") as tmp:
        base = Path(tmp)
        env = {**os.environ, "AIRFLOW_HOME": str(base / "home"), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
        phases: dict[str, Path] = {}
        for name, count in (("one_spec", 1), (f"{args.specs}_specs", args.specs)):
            make_specs(base / name / "sources", count)
            (base / name / "dags").mkdir()
            (base / name / "dags" / "ingest.py").write_text(FACTORY.format(specs=str(base / name / "sources")))
            phases[name] = base / name / "dags"
        trivial = base / "trivial" / "dags"
        trivial.mkdir(parents=True)
        for i in range(args.specs):
            (trivial / f"trivial_{i:03d}.py").write_text(TRIVIAL.format(i=i))
        phases[f"{args.specs}_trivial"] = trivial
        results = {}
        for name, folder in phases.items():
            runs = [measure(folder, env) for _ in range(args.repeat)]
            best = min(r["seconds"] for r in runs)
            results[name] = best
            print(
                f"{name:>14}: {best:6.3f} s (best of {args.repeat}), {runs[0]['dags']} DAGs, "
                f"{runs[0]['errors']} import errors"
            )
        many = results[f"{args.specs}_specs"]
        print(
            f"{args.specs} specs vs 1 spec: x{many / results['one_spec']:.2f}; "
            f"vs {args.specs} trivial DAG files: x{many / results[f'{args.specs}_trivial']:.2f}; "
            f"target < 2 s: {'met' if many < 2 else 'NOT met'}"
        )


if __name__ == "__main__":
    main()
