"""Parquet tables on disk: atomic writes, plain reads."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from pipeline.io.files import atomic_write


def write_parquet(df: pd.DataFrame, path: Path) -> None:
    """Write ``df`` (index dropped) atomically."""
    atomic_write(Path(path), lambda tmp: df.to_parquet(tmp, index=False, engine="pyarrow"))


def read_parquet(path: Path) -> pd.DataFrame:
    return pd.read_parquet(path, engine="pyarrow")


def read_table(path: Path) -> pd.DataFrame:
    """Read a CSV or parquet table (by extension)."""
    path = Path(path)
    if path.suffix.lower() in (".parquet", ".pq"):
        return read_parquet(path)
    return pd.read_csv(path)
