"""Read throughput on a synthetic SPF-shaped hospital file: a plain ``csv.reader`` loop (the baseline), our
per-record reader (``read_records``), our columnar reader (``read_batches``), the ``sources preview`` path and
the core with every record id hashed on one thread (``core_with_ids``: what a stream executor does).

Each phase runs in its own subprocess, so its peak RSS (``ru_maxrss``) is its own; every ratio is to the
baseline measured in the same run. To add a phase, write a function ``(path) -> rows`` and register it in PHASES.

    .venv/bin/python bench/read_throughput.py              # ~100 MB file (2.65M rows) in a temp dir
    .venv/bin/python bench/read_throughput.py --rows 200000 --file /tmp/spf.csv
    .venv/bin/python bench/read_throughput.py --scale 1000000,10000000 --phases covidflow_batches,sources_preview
    .venv/bin/python bench/read_throughput.py --rounds 3   # interleaved rounds: median rates and ratios

``--scale`` generates one file per row count (in --dir, kept for re-runs) and runs the phases on each, then
prints each phase's time per row and peak RSS at every size next to the smallest size (the issue's bar: per-row
time of the larger within 1.2x, memory flat).
"""

from __future__ import annotations

import argparse
import csv
import importlib
import json
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

FIRST_DAY = date(2020, 3, 1)
DEFAULT_ROWS = 2_650_000  # ~100 MB with SPF's quoting and CRLF


def generate(path: Path, rows: int) -> None:
    """SPF hospital layout: "dep";sexe;"jour";hosp;rea;rad;dc with CRLF, quoted text fields."""
    rng = random.Random(2020)
    deps = [f"{i:02d}" for i in range(1, 96) if i != 20] + ["2A", "2B", "971", "972", "973", "974", "976"]
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write('"dep";"sexe";"jour";"hosp";"rea";"rad";"dc"\r\n')
        written, day = 0, 0
        while written < rows:
            jour = (FIRST_DAY + timedelta(days=day)).isoformat()
            for dep in deps:
                for sexe in (0, 1, 2):
                    if written == rows:
                        break
                    hosp, rea = rng.randrange(2000), rng.randrange(400)
                    out.write(f'"{dep}";{sexe};"{jour}";{hosp};{rea};{rng.randrange(9000)};{rng.randrange(900)}\r\n')
                    written += 1
            day += 1


def phase_plain_csv(path: Path) -> int:
    """Baseline: the stdlib csv module, rows as lists."""
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter=";")
        next(reader)
        return sum(1 for _ in reader)


def phase_plain_dictreader(path: Path) -> int:
    """Baseline that also builds a dict per row, like our records."""
    with path.open(encoding="utf-8", newline="") as f:
        return sum(1 for _ in csv.DictReader(f, delimiter=";"))


def phase_covidflow_csv(path: Path) -> int:
    """Our reader: records with line numbers, per-row rejects, caps."""
    from covidflow.read import RawRecord, open_records

    rows = 0
    for item in open_records(path, "csv", {"delimiter": ";"}):
        if not isinstance(item, RawRecord):
            raise SystemExit(f"unexpected reject: {item}")
        rows += 1
    return rows


def phase_covidflow_batches(path: Path) -> int:
    """Our columnar reader: Arrow raw batches (pyarrow on blocks of clean lines), same rejects and line numbers."""
    import pyarrow as pa

    from covidflow.read.batch import read_batches

    rows = 0
    with path.open("rb") as f:
        for item in read_batches(f, "csv", {"delimiter": ";"}, name=str(path)):
            if not isinstance(item, pa.RecordBatch):
                raise SystemExit(f"unexpected item: {item}")
            rows += item.num_rows
    return rows


def phase_sources_preview(path: Path) -> int:
    """What ``covidflow sources preview spf_donnees_hospitalieres FILE`` does: reader + normalisation core.

    Counts input rows (each becomes 4 canonical records), so its rate compares with the other phases.
    """
    from covidflow.catalog.specs import find_spec
    from covidflow.normalise.preview import run_file

    records, summary = run_file(find_spec("spf_donnees_hospitalieres"), path)
    records.drain()  # what the CLI does after printing its --limit records: count on Arrow tables, no dicts
    if summary.reject_count or summary.error:
        raise SystemExit("unexpected rejects:\n" + "\n".join(summary.lines()))
    return summary.rows_read


def phase_core_with_ids(path: Path) -> int:
    """What a stream executor does with the same rows: columnar reader + columnar core, every record's sha256 id
    hashed and every column built, on one thread (``sources preview`` hashes the ids of the records it prints
    only, and normalises on all cores)."""
    from covidflow.catalog.specs import find_spec
    from covidflow.normalise.columnar import BatchNormaliser
    from covidflow.normalise.preview import PREVIEW_BATCH_ROWS, local_provenance
    from covidflow.read.batch import open_batches

    spec = find_spec("spf_donnees_hospitalieres")
    core, prov, rows = BatchNormaliser(spec), local_provenance(spec, path), 0
    for chunk in open_batches(path, spec["format"], spec.get("reader") or {}, batch_rows=PREVIEW_BATCH_ROWS):
        rows += len(chunk)
        for result in core.iter_normalise(chunk, prov):
            if result.rejects:
                raise SystemExit(f"unexpected rejects: {result.rejects[:3]}")
    return rows


PHASES: dict[str, Callable[[Path], int]] = {
    "plain_csv": phase_plain_csv,
    "plain_dictreader": phase_plain_dictreader,
    "covidflow_csv": phase_covidflow_csv,
    "covidflow_batches": phase_covidflow_batches,
    "sources_preview": phase_sources_preview,
    "core_with_ids": phase_core_with_ids,
}
BASELINE = "plain_csv"


#: Modules a phase imports before its clock starts: a fixed cost, reported apart ("import s"), not per row.
#: pandas is among them for the phases that normalise: pyarrow imports it (about 0.35 s) on the first
#: ``pa.array`` call, which the core makes; the reader alone never does.
IMPORTS: dict[str, list[str]] = {
    "covidflow_csv": ["covidflow.read"],
    "covidflow_batches": ["covidflow.read.batch", "pyarrow", "pyarrow.csv", "pyarrow.compute", "numpy"],
    "sources_preview": ["covidflow.catalog.specs", "covidflow.normalise.preview", "pandas"],
    "core_with_ids": ["covidflow.catalog.specs", "covidflow.normalise.preview", "covidflow.read.batch", "pandas"],
}


def run_phase(name: str, path: Path) -> None:
    """Child process: run one phase, print its figures as JSON."""
    start = time.perf_counter()
    for module in IMPORTS.get(name, []):
        importlib.import_module(module)
    imported = time.perf_counter()
    rows = PHASES[name](path)
    seconds = time.perf_counter() - imported
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(
        json.dumps(
            {
                "phase": name,
                "rows": rows,
                "seconds": seconds,
                "import_seconds": imported - start,
                "peak_rss_kib": peak_kib,
            }
        )
    )


def run_child(name: str, path: Path) -> dict:
    """Run one phase in a fresh interpreter on ``path``; its JSON figures."""
    out = subprocess.run(
        [sys.executable, __file__, "--phase", name, "--file", str(path)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def measure(names: list[str], path: Path, size_mb: float) -> dict[str, dict]:
    """Run the phases one after the other, printing each one's line as soon as it is measured."""
    vs = "vs " + BASELINE
    head = f"{'phase':<18} {'rows':>10} {'seconds':>8} {'rows/s':>11} {'MB/s':>7} {vs:>13} {'peak RSS':>9}"
    print(f"{head} {'import s':>9}", flush=True)
    results: dict[str, dict] = {}
    for name in names:
        r = results[name] = run_child(name, path)
        base = results.get(BASELINE)
        rate = r["rows"] / r["seconds"]
        ratio = f"{rate / (base['rows'] / base['seconds']):.2f}x" if base else "-"
        print(
            f"{name:<18} {r['rows']:>10} {r['seconds']:>8.2f} {rate:>11,.0f} {size_mb / r['seconds']:>7.1f} "
            f"{ratio:>13} {r['peak_rss_kib'] / 1024:>7.1f}MB {r.get('import_seconds', 0):>9.2f}",
            flush=True,
        )
    return results


def rounds(names: list[str], path: Path, size_mb: float, count: int) -> None:
    """The phases ``count`` times, interleaved, then each phase's median rate and its median ratio to the
    baseline of the same round: on a shared machine the baseline itself moves between runs."""
    measured = []
    for i in range(count):
        print(f"\nround {i + 1} of {count}", flush=True)
        measured.append(measure(names, path, size_mb))
    print(f"\nmedians over {count} rounds (ratio: median of each round's ratio to its own {BASELINE}):")
    print(f"{'phase':<18} {'rows/s':>11} {'vs ' + BASELINE:>13} {'ratios per round':<36} {'peak RSS':>9}")
    for name in names:
        rates = [r[name]["rows"] / r[name]["seconds"] for r in measured]
        ratios = [
            rate / (r[BASELINE]["rows"] / r[BASELINE]["seconds"]) for rate, r in zip(rates, measured, strict=True)
        ]
        peak = max(r[name]["peak_rss_kib"] for r in measured) / 1024
        each = " ".join(f"{x:.2f}" for x in ratios)
        rate, ratio = statistics.median(rates), statistics.median(ratios)
        print(f"{name:<18} {rate:>11,.0f} {ratio:>12.2f}x {each:<36} {peak:>7.1f}MB")


def scale(counts: list[int], names: list[str], directory: Path) -> None:
    """The same phases on files of growing size: time per row and peak RSS next to the smallest file's."""
    table: dict[int, dict[str, dict]] = {}
    for rows in counts:
        path = directory / f"spf_hosp_{rows}.csv"
        if not path.exists():
            print(f"generating {rows} rows -> {path}", flush=True)
            generate(path, rows)
        size_mb = path.stat().st_size / 1e6
        print(f"\nfile: {path} ({size_mb:.1f} MB)", flush=True)
        table[rows] = measure(names, path, size_mb)
    first = counts[0]
    print(f"\nscale (vs {first:,} rows):")
    print(f"{'phase':<18} {'rows':>11} {'us/row':>8} {'x smallest':>11} {'peak RSS':>9} {'x smallest':>11}")
    for name in names:
        base = table[first][name]
        base_us = base["seconds"] / base["rows"] * 1e6
        for rows in counts:
            r = table[rows][name]
            us = r["seconds"] / r["rows"] * 1e6
            print(
                f"{name:<18} {rows:>11,} {us:>8.3f} {us / base_us:>10.2f}x {r['peak_rss_kib'] / 1024:>7.1f}MB "
                f"{r['peak_rss_kib'] / base['peak_rss_kib']:>10.2f}x"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=DEFAULT_ROWS, help="data rows to generate (default ~100 MB)")
    parser.add_argument("--file", type=Path, help="CSV to use; generated there if missing (default: a temp dir)")
    parser.add_argument(
        "--phases", default=",".join(PHASES), help=f"comma-separated phases to run, {BASELINE} first for the ratios"
    )
    parser.add_argument("--scale", help="comma-separated row counts: run the phases on one file of each size")
    parser.add_argument("--dir", type=Path, help="where --scale keeps its files (default: a temp dir, removed)")
    parser.add_argument("--rounds", type=int, default=1, help="run the phases this many times, interleaved; medians")
    parser.add_argument("--phase", help=argparse.SUPPRESS)  # internal: run one phase in this process
    args = parser.parse_args()
    if args.phase:
        run_phase(args.phase, args.file)
        return
    names = args.phases.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        if args.scale:
            directory = args.dir or Path(tmp)
            directory.mkdir(parents=True, exist_ok=True)
            scale([int(n) for n in args.scale.split(",")], names, directory)
            return
        path = args.file or Path(tmp) / f"spf_hosp_{args.rows}.csv"
        if not path.exists():
            print(f"generating {args.rows} rows -> {path}", flush=True)
            generate(path, args.rows)
        size_mb = path.stat().st_size / 1e6
        print(f"file: {path} ({size_mb:.1f} MB)", flush=True)
        if args.rounds > 1:
            rounds(names, path, size_mb, args.rounds)
        else:
            measure(names, path, size_mb)


if __name__ == "__main__":
    main()
