"""What the rollover-safe Elasticsearch write costs: EsWriter on a one-index alias (the baseline, no lookup) vs
the same writer after a rollover, for new ids (looked up in the older index, then indexed in the new one) and for
replayed ids (looked up, then overwritten in the older index that holds them).

    .venv/bin/python bench/es_writer_rollover.py [--records 20000] [--batch 2000]

Needs `covidflow stack up elasticsearch`. Uses a private alias, deleted at the end; prints one table.
"""

from __future__ import annotations

import argparse
import time
import uuid
from itertools import islice

from covidflow import clients
from covidflow.catalog.specs import load_all
from covidflow.index.es_template import generate_template
from covidflow.index.es_writer import EsWriter
from covidflow.normalise.preview import run_file
from covidflow.stack.connections import use_stack_connections


def timed_writes(writer: EsWriter, records: list[dict], batch: int) -> float:
    """Records per second, written in micro-batches the size the stream uses."""
    start = time.perf_counter()
    for i in range(0, len(records), batch):
        writer.write(records[i : i + batch])
    return len(records) / (time.perf_counter() - start)


def main() -> None:
    use_stack_connections()  # the local stack's logins, unless the environment has its own connections
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=20_000)
    ap.add_argument("--batch", type=int, default=2_000)
    args = ap.parse_args()

    records = list(islice((r for spec in load_all().values() if spec.sample_path
                           for r in run_file(spec, spec.sample_path)[0]), 2 * args.records))  # fmt: skip
    first, second = records[: args.records], records[args.records :]
    es = clients.elasticsearch(cached=False, request_timeout=120)
    alias = f"bench-writer-{uuid.uuid4().hex[:8]}"
    tpl = generate_template()["template"]
    es.indices.create(index=f"{alias}-000001", settings=tpl["settings"], mappings=tpl["mappings"],
                      aliases={alias: {"is_write_index": True}})  # fmt: skip
    try:
        writer = EsWriter(es, alias=alias)
        base = timed_writes(writer, first, args.batch)
        es.indices.rollover(alias=alias, settings={"number_of_replicas": 0})
        fresh = timed_writes(writer, second, args.batch)
        replay = timed_writes(writer, first, args.batch)
        es.indices.refresh(index=alias)
        counts = {name: es.count(index=name)["count"] for name in sorted(es.indices.get_alias(name=alias))}
    finally:
        es.indices.delete(index=",".join(es.indices.get(index=f"{alias}-*")))
    print(f"{len(first):,} + {len(second):,} records of the bundled samples, batches of {args.batch:,}")
    print(f"{'case':48} {'records/s':>10} {'vs baseline':>12}")
    print(f"{'one index, no lookup (baseline)':48} {base:10,.0f} {1.0:11.2f}x")
    print(f"{'after rollover, new ids (lookup + index)':48} {fresh:10,.0f} {fresh / base:11.2f}x")
    print(f"{'after rollover, replayed ids (lookup, in place)':48} {replay:10,.0f} {replay / base:11.2f}x")
    print(f"documents per index: {counts} (expected {len(first):,} and {len(second):,}: no copy)")


if __name__ == "__main__":
    main()
