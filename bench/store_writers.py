"""The store writers against their baselines, same records, same run: Cassandra and Elasticsearch.

SPF-shaped canonical records (a synthetic SPF hospital file, `bench/read_throughput.py`'s generator, through the
normalisation core: 4 records per row) are written by, each phase in its own subprocess (so its peak RSS is its
own) and in micro-batches of `--batch` records like the stream's:

Cassandra, into every table the writer writes (observations_latest USING TIMESTAMP, observations_by_vintage,
vintages_by_source), each phase in its own private keyspace:
  - `cassandra_naive`: a synchronous `session.execute` per row (the baseline; on the first `--naive-records`
    records only, since its rate per row does not depend on the count);
  - `cassandra_concurrent`: the previous writer, `execute_concurrent_with_args` at concurrency 64, table by table
    (on the first `--concurrent-records` records, for the same reason);
  - `cassandra_writer` / `cassandra_writer_arrow`: `CassandraWriter` on record dicts / on an Arrow table.
Elasticsearch, each phase into its own private index built from the project's template:
  - `es_raw_bulk`: `helpers.bulk` of the prepared actions (the baseline: no id lookup, no retries);
  - `es_writer_sequential`: `EsWriter` with one request of 1,000 documents at a time (the previous writer);
  - `es_writer` / `es_writer_arrow`: `EsWriter` on record dicts / on an Arrow table.

    .venv/bin/python bench/store_writers.py [--records 100000] [--batch 20000] [--naive-records 10000]
        [--concurrent-records 30000] [--phases cassandra_naive,es_raw_bulk,...] [--rounds 2]

Every run writes into a fresh private keyspace or index, dropped as soon as the run ends (so its flushes,
compactions and merges do not slow the next phase down); with `--rounds 2` every other round runs the phases in
reverse order and the table shows the mean rate and each run's. Needs `covidflow stack up cassandra
elasticsearch`; the stack's own keyspace and indices are not touched.
"""

from __future__ import annotations

import argparse
import json
import pickle
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

CASSANDRA_PHASES = ["cassandra_naive", "cassandra_concurrent", "cassandra_writer", "cassandra_writer_arrow"]
ES_PHASES = ["es_raw_bulk", "es_writer_sequential", "es_writer", "es_writer_arrow"]


def make_records(rows: int, path: Path) -> int:
    """SPF-shaped canonical records, pickled once for every phase."""
    from read_throughput import generate

    from covidflow.catalog.specs import find_spec
    from covidflow.normalise.preview import run_file

    csv_path = path.with_suffix(".csv")
    generate(csv_path, rows)
    records, summary = run_file(find_spec("spf_donnees_hospitalieres"), csv_path)
    records = list(records)
    if summary.reject_count or summary.error:
        raise SystemExit("unexpected rejects:\n" + "\n".join(summary.lines()))
    path.write_bytes(pickle.dumps(records, protocol=pickle.HIGHEST_PROTOCOL))
    return len(records)


def chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def cassandra_phase(name: str, records: list[dict], keyspace: str, batch: int) -> tuple[int, float]:
    """Writes ``records`` the way ``name`` says; returns rows written (all tables)."""
    from cassandra.concurrent import execute_concurrent_with_args

    from covidflow.store.cassandra_writer import (
        TIMESTAMP_MARKER,
        CassandraWriter,
        _unset_nulls,
        cassandra_values,
        session,
        vintage_rows,
        write_timestamp,
    )

    sess = session()
    writer = CassandraWriter(sess, keyspace=keyspace)
    if name.startswith("cassandra_writer"):
        arrow = name.endswith("arrow")
        parts = [to_arrow(p) if arrow else p for p in chunks(records, batch)]
        start = time.perf_counter()
        rows = sum(sum(writer.write(part).values()) for part in parts)
        return rows, time.perf_counter() - start

    def params(table: str, cols: list[str], part: list[dict]) -> list[tuple]:
        if writer.tables[table]["bound"][-1] == TIMESTAMP_MARKER:  # written USING TIMESTAMP <write version>
            rows = [(*cassandra_values(r, cols), write_timestamp(r)) for r in part]
        elif table == "vintages_by_source":
            rows = vintage_rows(part, cols)
        else:
            rows = [cassandra_values(r, cols) for r in part]
        return [_unset_nulls(row) for row in rows]

    start = time.perf_counter()
    written = 0
    for part in chunks(records, batch):
        for table, (stmt, cols) in writer.inserts.items():
            values = params(table, cols, part)
            if name == "cassandra_naive":
                for row in values:
                    sess.execute(stmt, row)
            else:
                results = execute_concurrent_with_args(sess, stmt, values, concurrency=64, raise_on_first_error=True)
                assert all(ok for ok, _ in results)
            written += len(values)
    return written, time.perf_counter() - start


def es_phase(name: str, records: list[dict], index: str, batch: int) -> tuple[int, float]:
    from elasticsearch import helpers

    from covidflow.index.es_writer import EsWriter, client, es_actions

    es = client()
    if name == "es_raw_bulk":
        parts = [es_actions(p, index) for p in chunks(records, batch)]
        start = time.perf_counter()
        docs = sum(helpers.bulk(es, actions)[0] for actions in parts)
        return docs, time.perf_counter() - start
    if name == "es_writer_sequential":
        writer = EsWriter(es, alias=index, threads=1, bulk_docs=1000)
    else:
        writer = EsWriter(es, alias=index)
    parts = [to_arrow(p) if name.endswith("arrow") else p for p in chunks(records, batch)]
    start = time.perf_counter()
    docs = sum(writer.write(part) for part in parts)
    return docs, time.perf_counter() - start


def to_arrow(records: list[dict]) -> Any:
    import pyarrow as pa

    from covidflow.catalog.schema import arrow_schema

    return pa.Table.from_pylist(records, schema=arrow_schema())


def run_phase(name: str, data: Path, target: str, batch: int, limit: int) -> None:
    """Child process: one phase; prints its figures as JSON."""
    records = pickle.loads(data.read_bytes())
    if limit:
        records = records[:limit]
    if name == "load_only":
        rows, seconds = len(records), 1.0
    elif name.startswith("cassandra"):
        rows, seconds = cassandra_phase(name, records, target, batch)
    else:
        rows, seconds = es_phase(name, records, target, batch)
    peak_kib = peak_rss_kib()
    out = {"phase": name, "records": len(records), "rows": rows, "seconds": seconds, "peak_rss_kib": peak_kib}
    print(json.dumps(out))


def peak_rss_kib() -> int:
    """This process's own peak RSS. Not ``ru_maxrss``: Linux carries it over ``exec`` from the forking parent."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def setup_target(phase: str, name: str) -> str:
    """A private keyspace (tables from the generated CQL) or index (project template) for one run of a phase."""
    from covidflow.index.es_template import generate_template
    from covidflow.index.es_writer import client
    from covidflow.store.cassandra_writer import ensure_schema, session

    if phase.startswith("cassandra"):
        ensure_schema(session(), keyspace=name.replace("-", "_"))
        return name.replace("-", "_")
    tpl = generate_template()["template"]
    client().indices.create(index=f"{name}-000001", settings=tpl["settings"], mappings=tpl["mappings"],
                            aliases={name: {"is_write_index": True}})  # fmt: skip
    return name


def drop_target(phase: str, target: str) -> None:
    """Dropped right after its run, so its flushes, compactions and merges do not slow the next phase down."""
    from covidflow.index.es_writer import client
    from covidflow.store.cassandra_writer import session

    if phase.startswith("cassandra"):
        session().execute(f"DROP KEYSPACE IF EXISTS {target}", timeout=120)
    else:
        es = client()
        es.indices.delete(index=",".join(es.indices.get(index=f"{target}-*")))


def run_child(phase: str, data: Path, target: str, batch: int, limit: int) -> dict:
    cmd = [sys.executable, __file__, "--phase", phase, "--data", str(data), "--target", target,
           "--batch", str(batch), "--limit", str(limit)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"phase {phase} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    from covidflow.stack.connections import use_stack_connections

    use_stack_connections()  # the local stack's logins, unless the environment has its own connections
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=100_000, help="canonical records (4 per generated row)")
    parser.add_argument("--batch", type=int, default=20_000, help="records per write call (a stream partition)")
    parser.add_argument("--naive-records", type=int, default=10_000, help="records for the per-row loop")
    parser.add_argument("--concurrent-records", type=int, default=30_000, help="records for the previous writer")
    parser.add_argument("--phases", default=",".join(CASSANDRA_PHASES + ES_PHASES))
    parser.add_argument("--rounds", type=int, default=1, help="repeat the phases, every other round in reverse order")
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--target", help=argparse.SUPPRESS)
    parser.add_argument("--limit", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        run_phase(args.phase, args.data, args.target, args.batch, args.limit)
        return

    phases = args.phases.split(",")
    limits = {"cassandra_naive": args.naive_records, "cassandra_concurrent": args.concurrent_records}
    tag = uuid.uuid4().hex[:8]
    runs: dict[str, list[dict]] = {phase: [] for phase in phases}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "records.pickle"
        n = make_records(args.records // 4, data)
        print(f"{n:,} SPF-shaped canonical records, write calls of {args.batch:,} records", flush=True)
        loaded = run_child("load_only", data, "-", args.batch, 0)
        for round_ in range(args.rounds):
            for i, phase in enumerate(phases if round_ % 2 == 0 else phases[::-1]):
                target = setup_target(phase, f"bench-store-{tag}-{round_}-{i}")
                try:
                    r = run_child(phase, data, target, args.batch, limits.get(phase, 0))
                finally:
                    drop_target(phase, target)
                runs[phase].append(r)
                print(f"  round {round_ + 1} {phase}: {r['records'] / r['seconds']:,.0f} records/s", flush=True)

    def rate(phase: str) -> float:  # the mean over the rounds
        return sum(r["records"] / r["seconds"] for r in runs[phase]) / len(runs[phase])

    print(f"\n{'phase':24} {'records':>9} {'rows':>9} {'records/s':>10} {'vs baseline':>12} {'peak RSS':>9}  runs")
    for group, baseline in ((CASSANDRA_PHASES, "cassandra_naive"), (ES_PHASES, "es_raw_bulk")):
        for phase in group:
            if not runs.get(phase):
                continue
            r = runs[phase][0]
            ratio = f"{rate(phase) / rate(baseline):11.2f}x" if runs.get(baseline) else f"{'-':>12}"
            peak = max(x["peak_rss_kib"] for x in runs[phase]) / 1024
            each = ", ".join(f"{x['records'] / x['seconds']:,.0f}" for x in runs[phase])
            print(f"{phase:24} {r['records']:9,} {r['rows']:9,} {rate(phase):10,.0f} {ratio} {peak:6.0f} MB  {each}")
    print(f"peak RSS of a process that only loads the records: {loaded['peak_rss_kib'] / 1024:.0f} MB")
    print("baselines: cassandra_naive (synchronous insert per row), es_raw_bulk (helpers.bulk, no lookup)")


if __name__ == "__main__":
    main()
