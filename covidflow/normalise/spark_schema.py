"""The Spark ``StructType`` of canonical records, derived from observation.yaml.

pyspark is imported inside the functions: the Airflow workers and the CLI import this package
without having (or paying for) Spark. No JVM is needed to build the schema.
"""

from __future__ import annotations

import re
from typing import Any

from covidflow.catalog.schema import ObservationSchema, load_schema


def _datatype(spelled: str) -> Any:
    """``string``, ``double``... or ``struct<a:double,b:double>`` -> a pyspark DataType (no JVM)."""
    from pyspark.sql import types as t

    simple = {
        "string": t.StringType,
        "int": t.IntegerType,
        "long": t.LongType,
        "double": t.DoubleType,
        "date": t.DateType,
        "timestamp": t.TimestampType,
        "boolean": t.BooleanType,
    }
    match = re.fullmatch(r"struct<(.+)>", spelled.replace(" ", ""))
    if match:
        parts = [p.split(":", 1) for p in match.group(1).split(",")]
        return t.StructType([t.StructField(name, _datatype(typ), True) for name, typ in parts])
    return simple[spelled]()


def spark_schema(schema: ObservationSchema | None = None) -> Any:
    """A ``pyspark.sql.types.StructType`` with the schema's fields, types and nullability, in order."""
    from pyspark.sql.types import StructField, StructType

    schema = schema or load_schema()
    return StructType(
        [StructField(f.name, _datatype(schema.store_type(f, "spark")), f.nullable) for f in schema.fields]
    )
