"""``covidflow sources``: list, validate, preview and scaffold source specs (no service needed)."""

from __future__ import annotations

import csv
import io
import itertools
import json
import posixpath
import re
import sys
import zipfile
import zlib
from collections import Counter
from datetime import date, datetime
from pathlib import Path
from typing import Any

import click

from covidflow.catalog.specs import SOURCES_DIR, SourceSpec, SpecError, find_spec, load_spec, object_fields, spec_paths

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
            for line in dict.fromkeys(str(p) for p in exc.problems):  # each problem once, in order
                click.echo(f"INVALID {line}", err=True)
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


def landing_warnings(spec: SourceSpec, name: str) -> list[str]:
    """Why a file of this name would not be read as previewed once landed: the pipeline's own matching rule."""
    from covidflow.land.objects import matches

    prefix, patterns = spec["landing"]["prefix"], spec["landing"]["patterns"]
    out = []
    if not matches(prefix + name, prefix, patterns):
        out.append(
            f"{name} matches none of {spec.id}'s landing patterns ({', '.join(patterns)}): "
            f"landed under {prefix}, the pipeline would not pick it up"
        )
    if spec.get("object") and not object_fields(spec.data, name):
        out.append(
            f"{name} does not match object.pattern {spec['object']['pattern']!r}: "
            "its @object columns are missing, so rows that use them are rejected"
        )
    return out


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
    for warning in landing_warnings(spec, file.name):
        click.echo(f"warning: {warning}", err=True)
    records, summary = run_file(spec, file, progress=True)  # progress on stderr when it is a terminal
    shown = list(itertools.islice(records, max(limit, 0)))
    records.drain()  # keep reading (columnar, no dicts): the summary covers the whole file
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

_DATE_RX = re.compile(r"^\d{4}-\d{2}-\d{2}([T ][\d:.]+Z?)?$|^\d{1,2}/\d{1,2}/\d{2,4}$|^\d{4}-W?\d{2}$")
_NUMBER_RX = re.compile(r"^-?\d+([.,]\d+)?$")
_LOCATION_HINTS = ("dep", "departement", "reg", "region", "country", "pays", "location", "code", "iso", "maille")
#: Name parts of numeric columns that are codes, classes or context, not observations (cl_age90, id, Lat, pop...).
_CODE_TOKENS = frozenset(
    {
        "cl",
        "age",
        "class",
        "classe",
        "code",
        "codes",
        "id",
        "uid",
        "fips",
        "insee",
        "iso",
        "siren",
        "siret",
        "year",
        "annee",
        "week",
        "semaine",
        "sex",
        "sexe",
        "num",
        "numero",
        "zip",
        "postal",
        "lat",
        "lon",
        "long",
        "latitude",
        "longitude",
        "pop",
        "population",
        "rank",
        "order",
        "index",
    }
)
_EXTENSIONS = {
    ".csv": "csv", ".tsv": "csv", ".txt": "csv", ".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl",
    ".yaml": "yaml", ".yml": "yaml", ".xlsx": "xlsx", ".parquet": "parquet", ".xml": "xml", ".html": "html",
    ".htm": "html", ".md": "markdown", ".markdown": "markdown",
}  # fmt: skip
_SAMPLE_RECORDS = 200


def _head(path: Path, sample_bytes: int) -> tuple[bytes, str, dict[str, str]]:
    """The first bytes of the data (decompressed), the inner file's name, and the compression options."""
    raw = path.read_bytes()[:sample_bytes] if path.stat().st_size > sample_bytes else path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        inner = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(raw, sample_bytes)
        return inner, path.name.removesuffix(".gz").removesuffix(".gzip"), {"compression": "gzip"}
    if raw[:4] == b"PK\x03\x04":
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if not n.endswith("/")]
            if any(n.startswith("xl/") for n in names):
                return raw, path.name, {}  # an XLSX workbook is a zip too
            if not names:
                raise click.ClickException(f"{path}: empty zip archive")
            options = {"compression": "zip", **({"zip_member": names[0]} if len(names) > 1 else {})}
            with archive.open(names[0]) as member:
                return member.read(sample_bytes), posixpath.basename(names[0]), options
    return raw, path.name, {}


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def sniff_format(head: bytes, name: str) -> str:
    """A reader format from the bytes (magic numbers, first characters) and the name's extension."""
    if head[:4] == b"PAR1":
        return "parquet"
    if head[:4] == b"PK\x03\x04":
        return "xlsx"
    text = head.decode("utf-8", errors="replace").lstrip("\ufeff \t\r\n")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    by_name = _EXTENSIONS.get(posixpath.splitext(name.lower())[1])
    if text[:1] in "[{":
        complete = lines[:-1] if len(lines) > 2 else lines  # the last line may be cut by the sample
        if len(complete) > 1 and all(line.startswith("{") and _is_json(line) for line in complete):
            return "jsonl"
        return "json"
    if text[:1] == "<":
        return "html" if re.search(r"<(!doctype html|html|table)\b", text[:4096], re.I) else "xml"
    if by_name in ("yaml", "markdown", "xlsx", "parquet"):
        return by_name
    if any(re.fullmatch(r"\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)+\|?", line) for line in lines[:200]):
        return "markdown"
    if lines and (lines[0] == "---" or re.match(r"^[\w\"'][\w \"'.-]*:(\s|$)", lines[0])) and by_name != "csv":
        return "yaml"
    return "csv"


def _xml_record_tag(text: str) -> str | None:
    """The repeated element that holds one record: the earliest of the most frequent child elements."""
    tags = re.findall(r"<([A-Za-z_][\w.:-]*)[\s>/]", text)
    if len(tags) < 2:
        return None
    counts = Counter(tags[1:])  # the root element is not a record
    top = max(counts.values())
    return next(t for t in tags[1:] if counts[t] == top)


def _json_records_path(text: str) -> str | None:
    """For a top-level object: the first key whose value is a list of objects (the records)."""
    try:
        document = json.loads(text)
    except ValueError:
        return None
    if isinstance(document, dict):
        for key, value in document.items():
            if isinstance(value, list) and value and all(isinstance(v, dict) for v in value[:10]):
                return key
    return None


def _kind(values: list[Any]) -> str:
    texts = [str(v).strip() for v in values if v is not None and str(v).strip() != ""]
    if not texts:
        return "text"
    if all(isinstance(v, bool) for v in values if v is not None):
        return "text"
    if all(_DATE_RX.match(t) for t in texts):
        return "date"
    if all(_NUMBER_RX.match(t) for t in texts):
        # "09", "001": zero-padded integers are codes (age classes, INSEE codes), not counts
        return "code" if any(len(t) > 1 and t[0] == "0" and t[1].isdigit() for t in texts) else "number"
    return "text"


def code_like(name: str) -> bool:
    """A numeric column whose name says it is a code, a class or context (cl_age90, dep_id, Lat, pop)."""
    tokens = [re.sub(r"\d+$", "", t) for t in re.split(r"[^0-9a-z]+|(?<=[a-z])(?=\d)", name.lower()) if t]
    return any(t in _CODE_TOKENS for t in tokens)


def _csv_dialect(head: bytes, path: Path) -> dict[str, Any]:
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
    columns = {name: [r[i] for r in data if i < len(r)] for i, name in enumerate(header)}
    return {"encoding": encoding, "delimiter": delimiter, "values": columns}


def sniff(path: Path, sample_bytes: int = 64 * 1024) -> dict[str, Any]:
    """Format, reader options, columns (with a kind and an example) from the head of a sample file.

    Every format the readers know is recognised (CSV, JSON, JSON Lines, YAML, XLSX, Parquet, XML, HTML and
    Markdown tables, gzip or zip around them); the columns of non-CSV files come from the format's own reader.
    """
    from covidflow.read import ReaderError, open_records

    if path.stat().st_size == 0:
        raise click.ClickException(f"{path}: empty file, nothing to sniff")
    head, inner_name, reader = _head(path, sample_bytes)
    fmt = sniff_format(head, inner_name)
    encoding, delimiter = "utf-8", ","
    if fmt == "csv":
        dialect = _csv_dialect(head, path)
        encoding, delimiter, values = dialect["encoding"], dialect["delimiter"], dialect["values"]
        if delimiter != ",":
            reader["delimiter"] = delimiter
        if encoding != "utf-8":
            reader["encoding"] = encoding
    else:
        text = head.decode("utf-8", errors="replace")
        if fmt == "xml" and (tag := _xml_record_tag(text)):
            reader["record_tag"] = tag
        if fmt == "json" and text.lstrip("\ufeff \t\r\n")[:1] == "{" and (key := _json_records_path(text)):
            reader["records_path"] = key
        values = {}
        try:
            for record in itertools.islice(open_records(path, fmt, reader), _SAMPLE_RECORDS):
                for key, value in getattr(record, "fields", {}).items():
                    values.setdefault(key, []).append(value)
        except ReaderError as exc:
            raise click.ClickException(f"{path}: looks like {fmt}, but: {exc}") from None
    columns = []
    for name, vals in values.items():
        kind = _kind(vals)
        if kind == "number" and code_like(name):
            kind = "code"
        example = next((str(v) for v in vals if v is not None and str(v) != ""), "")
        columns.append({"name": name, "kind": kind, "example": example})
    return {"format": fmt, "reader": reader, "encoding": encoding, "delimiter": delimiter, "columns": columns}


def scaffold(source_id: str, path: Path, sniffed: dict[str, Any]) -> str:
    """A spec with every guess filled in and TODOs where a human must decide (validate fails until then)."""
    cols = sniffed["columns"]
    date_col = next((c["name"] for c in cols if c["kind"] == "date"), "TODO_date_column")
    loc_col = next(
        (c["name"] for c in cols if c["kind"] != "date" and c["name"].lower().strip('"') in _LOCATION_HINTS),
        next((c["name"] for c in cols if c["kind"] == "text"), "TODO_location_column"),
    )
    numbers = [c for c in cols if c["kind"] == "number" and c["name"] not in (loc_col, date_col)]
    codes = [c["name"] for c in cols if c["kind"] == "code" and c["name"] not in (loc_col, date_col)]

    def q(value: str) -> str:
        return json.dumps(value, ensure_ascii=False)

    suffix = "".join(path.suffixes[-2:]) if sniffed["reader"].get("compression") == "gzip" else path.suffix
    lines = [
        f"id: {source_id}",
        "title: TODO title",
        "publisher: TODO publisher",
        "licence: TODO licence",
        "home_page: https://TODO",
        f"landing: {{prefix: TODO/{source_id}/, patterns: [{q('*' + suffix)}]}}",
        f"format: {sniffed['format']}",
    ]
    if sniffed["reader"]:
        lines.append("reader: {" + ", ".join(f"{k}: {q(v)}" for k, v in sniffed["reader"].items()) + "}")
    example = next((c["example"] for c in cols if c["name"] == loc_col), "")
    lines += [
        f"location: {{column: {q(loc_col)}, scheme: TODO}}   # e.g. {example!r}: iso2 | fr_department | name ...",
        f"date: {{column: {q(date_col)}}}",
        "metrics:   # value column -> metric name from include/metrics.yaml",
        *(f"  {q(c['name'])}: TODO_metric   # e.g. {c['example']}" for c in numbers),
    ]
    if codes:
        lines.append(f"# not proposed as metrics (codes, classes, coordinates, population): {', '.join(codes)}")
        lines.append(
            "#   a class such as an age band is a dimension: dimensions: {age_group: {column: ..., map: {...}}}"
        )
    lines += ["vintage: {from: landed_at}", f"sample: {source_id}/{path.name}"]
    return "\n".join(lines) + "\n"


@sources.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--id", "source_id", required=True, help="Source id (lowercase, underscores); also the file name.")
@click.option(
    "--output", "-o", type=click.Path(dir_okay=False, path_type=Path), help="Default: include/sources/<id>.yaml"
)
@click.option("--force", is_flag=True, help="Overwrite an existing spec.")
def new(file: Path, source_id: str, output: Path | None, force: bool) -> None:
    """Scaffold a spec from a sample FILE by sniffing its format (CSV, JSON, XLSX... gzip or zip) and columns."""
    if not re.fullmatch(r"[a-z][a-z0-9_]*", source_id):
        raise click.ClickException(f"invalid id {source_id!r}: use lowercase letters, digits and underscores")
    sniffed = sniff(file)
    target = output or SOURCES_DIR / f"{source_id}.yaml"
    if target.exists() and not force:
        raise click.ClickException(f"{target} exists (use --force to overwrite)")
    target.write_text(scaffold(source_id, file, sniffed), encoding="utf-8")
    if sniffed["format"] == "csv":
        how = f"delimiter {sniffed['delimiter']!r}, encoding {sniffed['encoding']}"
    else:
        how = f"format {sniffed['format']}" + "".join(f", {k} {v!r}" for k, v in sniffed["reader"].items())
    click.echo(f"wrote {target}: {how}, {len(sniffed['columns'])} columns")
    click.echo("next: replace the TODOs, then `covidflow sources validate` and `covidflow sources preview`")
