"""Parquet tables, local or on object storage: atomic writes, plain reads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.io.files import atomic_write
from pipeline.io.paths import WorkPath, as_path, is_remote

PROVENANCE_KEY = b"stylepath"


def write_parquet(
    df: pd.DataFrame, path: WorkPath | str, provenance: dict[str, Any] | None = None
) -> None:
    """Write ``df`` (index dropped) atomically; ``provenance`` (config hash, code version, …)
    goes into the file's schema metadata under ``stylepath`` (``read_provenance``)."""
    if provenance is None:
        atomic_write(path, lambda tmp: df.to_parquet(tmp, index=False, engine="pyarrow"))
        return
    table = pa.Table.from_pandas(df, preserve_index=False)
    meta = dict(table.schema.metadata or {})
    meta[PROVENANCE_KEY] = json.dumps(provenance, sort_keys=True, default=str).encode()
    table = table.replace_schema_metadata(meta)
    atomic_write(path, lambda tmp: pq.write_table(table, tmp))


def read_provenance(path: WorkPath | str) -> dict[str, Any] | None:
    """The provenance a file was written with, or None."""
    path = as_path(path)
    if is_remote(path):
        with path.open("rb") as fh:
            meta = pq.read_schema(fh).metadata or {}
    else:
        meta = pq.read_schema(path).metadata or {}
    raw = meta.get(PROVENANCE_KEY)
    return json.loads(raw) if raw else None


def read_parquet(path: WorkPath | str, columns: list[str] | None = None) -> pd.DataFrame:
    path = as_path(path)
    if is_remote(path):
        with path.open("rb") as fh:
            return pd.read_parquet(fh, engine="pyarrow", columns=columns)
    return pd.read_parquet(path, engine="pyarrow", columns=columns)


def read_table(path: Path) -> pd.DataFrame:
    """Read a CSV or parquet table (by extension)."""
    path = Path(path)
    if path.suffix.lower() in (".parquet", ".pq"):
        return read_parquet(path)
    return pd.read_csv(path)
