"""``covidflow sources``: list, validate, preview and scaffold source specs (no service needed)."""

from __future__ import annotations

import csv
import io
import itertools
import json
import re
import sys
from datetime import date, datetime
from pathlib import Path
from typing import Any

import click

from covidflow.catalog.specs import SOURCES_DIR, SpecError, find_spec, load_spec, spec_paths

TABLE_COLUMNS = ("location_key", "date", "period", "metric", "sex", "age_group", "variant", "upstream", "value")


@click.group()
def sources() -> None:
    """Work with the declarative source specs in include/sources/."""


@sources.command("list")
def list_sources() -> None:
    """Id, format, licence and landing prefix of every source."""
    rows = [("ID", "FORMAT", "LICENCE", "LANDING PREFIX")]
    for path in spec_paths():
        try:
            spec = load_spec(path)
        except SpecError as exc:
            rows.append((path.stem, "?", f"INVALID: {exc.problems[0].message}", "?"))
            continue
        licence = spec["licence"] if len(spec["licence"]) <= 48 else spec["licence"][:45] + "..."
        rows.append((spec.id, spec["format"], licence, spec["landing"]["prefix"]))
    click.echo(_table(rows))


@sources.command()
@click.argument("specs", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path))
def validate(specs: tuple[Path, ...]) -> None:
    """Validate SPEC files (default: every include/sources/*.yaml); errors name file, line and field."""
    paths = list(specs) or spec_paths()
    bad = 0
    for path in paths:
        try:
            load_spec(path)
            click.echo(f"ok      {path}")
        except SpecError as exc:
            bad += 1
            for problem in exc.problems:
                click.echo(f"INVALID {problem}", err=True)
    click.echo(f"{len(paths) - bad} valid, {bad} invalid")
    if bad:
        sys.exit(1)


def _plain(value: Any) -> Any:
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return value


def _table(rows: list[tuple[Any, ...]]) -> str:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


@sources.command()
@click.argument("source_id")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--limit", "-n", default=20, show_default=True, help="Records to print (the summary covers the file).")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "jsonl"]), default="table", show_default=True)
def preview(source_id: str, file: Path, limit: int, fmt: str) -> None:
    """Read FILE through SOURCE_ID's spec, print canonical records, then a summary (to stderr for csv/jsonl).

    SOURCE_ID may also be the path of a draft spec (``my_source.yaml``), to try it before adding it.
    """
    from covidflow.normalise.preview import run_file

    try:
        spec = load_spec(source_id) if source_id.endswith((".yaml", ".yml")) else find_spec(source_id)
    except SpecError as exc:
        raise click.ClickException(str(exc)) from None
    records, summary = run_file(spec, file)
    shown = list(itertools.islice(records, max(limit, 0)))
    for _ in records:  # keep reading: the summary covers the whole file
        pass
    if fmt == "table":
        rows = [TABLE_COLUMNS, *[tuple(_plain(r[c]) for c in TABLE_COLUMNS) for r in shown]]
        click.echo(_table(rows))
    elif fmt == "csv":
        buf = io.StringIO()
        if shown:
            writer = csv.DictWriter(buf, fieldnames=list(shown[0]), lineterminator="\n")
            writer.writeheader()
            writer.writerows({k: _plain(v) for k, v in r.items()} for r in shown)
        click.echo(buf.getvalue(), nl=False)
    else:
        for r in shown:
            click.echo(
                json.dumps({k: _plain(v) if k != "location_point" else v for k, v in r.items()}, ensure_ascii=False)
            )
    to_stderr = fmt != "table"
    click.echo("", err=to_stderr)
    click.echo(f"summary for {file} ({spec.id}):", err=to_stderr)
    for line in summary.lines():
        click.echo(line, err=to_stderr)
    if summary.error:
        sys.exit(1)


# -- sources new --------------------------------------------------------------------------------------------

_DATE_RX = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_NUMBER_RX = re.compile(r"^-?\d+([.,]\d+)?$")
_LOCATION_HINTS = ("dep", "departement", "reg", "region", "country", "pays", "location", "code", "iso", "maille")


def sniff(path: Path, sample_bytes: int = 64 * 1024) -> dict[str, Any]:
    """Encoding, delimiter, columns and example values from the head of a delimited text file."""
    head = path.read_bytes()[:sample_bytes]
    encoding = "utf-8"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start >= len(head) - 4:  # a multi-byte character cut by the sample boundary
            text = head[: exc.start].decode("utf-8")
        else:
            encoding, text = "cp1252", head.decode("cp1252", errors="replace")
    if text.startswith("\ufeff"):
        encoding, text = "utf-8-sig", text[1:]
    lines = [line for line in text.splitlines() if line.strip()][:50]
    if not lines:
        raise click.ClickException(f"{path}: empty file, nothing to sniff")
    try:
        delimiter = csv.Sniffer().sniff("\n".join(lines[:20]), delimiters=",;\t|").delimiter
    except csv.Error:
        delimiter = ","
    rows = list(csv.reader(lines, delimiter=delimiter))
    header, data = rows[0], rows[1:]
    columns = []
    for i, name in enumerate(header):
        values = [r[i] for r in data if i < len(r) and r[i] != ""]
        kind = "text"
        if values and all(_DATE_RX.match(v) for v in values):
            kind = "date"
        elif values and all(_NUMBER_RX.match(v) for v in values):
            kind = "number"
        columns.append({"name": name, "kind": kind, "example": values[0] if values else ""})
    return {"encoding": encoding, "delimiter": delimiter, "columns": columns}


def scaffold(source_id: str, path: Path, sniffed: dict[str, Any]) -> str:
    """A spec with every guess filled in and TODOs where a human must decide (validate fails until then)."""
    cols = sniffed["columns"]
    date_col = next((c["name"] for c in cols if c["kind"] == "date"), "TODO_date_column")
    loc_col = next(
        (c["name"] for c in cols if c["kind"] != "date" and c["name"].lower().strip('"') in _LOCATION_HINTS),
        next((c["name"] for c in cols if c["kind"] == "text"), "TODO_location_column"),
    )
    reader = {}
    if sniffed["delimiter"] != ",":
        reader["delimiter"] = sniffed["delimiter"]
    if sniffed["encoding"] != "utf-8":
        reader["encoding"] = sniffed["encoding"]
    numbers = [c for c in cols if c["kind"] == "number" and c["name"] not in (loc_col, date_col)]

    def q(value: str) -> str:
        return json.dumps(value, ensure_ascii=False)

    lines = [
        f"id: {source_id}",
        "title: TODO title",
        "publisher: TODO publisher",
        "licence: TODO licence",
        "home_page: https://TODO",
        f"landing: {{prefix: TODO/{source_id}/, patterns: [{q('*' + path.suffix)}]}}",
        "format: csv",
    ]
    if reader:
        lines.append("reader: {" + ", ".join(f"{k}: {q(v)}" for k, v in reader.items()) + "}")
    example = next((c["example"] for c in cols if c["name"] == loc_col), "")
    lines += [
        f"location: {{column: {q(loc_col)}, scheme: TODO}}   # e.g. {example!r}: iso2 | fr_department | name ...",
        f"date: {{column: {q(date_col)}}}",
        "metrics:   # value column -> metric name from include/metrics.yaml",
        *(f"  {q(c['name'])}: TODO_metric   # e.g. {c['example']}" for c in numbers),
        "vintage: {from: landed_at}",
        f"sample: {source_id}/{path.name}",
    ]
    return "\n".join(lines) + "\n"


@sources.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--id", "source_id", required=True, help="Source id (lowercase, underscores); also the file name.")
@click.option(
    "--output", "-o", type=click.Path(dir_okay=False, path_type=Path), help="Default: include/sources/<id>.yaml"
)
@click.option("--force", is_flag=True, help="Overwrite an existing spec.")
def new(file: Path, source_id: str, output: Path | None, force: bool) -> None:
    """Scaffold a spec from a sample FILE by sniffing its delimiter, encoding and columns."""
    if not re.fullmatch(r"[a-z][a-z0-9_]*", source_id):
        raise click.ClickException(f"invalid id {source_id!r}: use lowercase letters, digits and underscores")
    sniffed = sniff(file)
    target = output or SOURCES_DIR / f"{source_id}.yaml"
    if target.exists() and not force:
        raise click.ClickException(f"{target} exists (use --force to overwrite)")
    target.write_text(scaffold(source_id, file, sniffed), encoding="utf-8")
    click.echo(f"wrote {target}: delimiter {sniffed['delimiter']!r}, encoding {sniffed['encoding']}, "
               f"{len(sniffed['columns'])} columns")  # fmt: skip
    click.echo("next: replace the TODOs, then `covidflow sources validate` and `covidflow sources preview`")
