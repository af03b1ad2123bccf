"""The cohort table: one row per slide, validated before any work starts.

Columns: ``slide_id`` (unique; letters, digits, ``._-``), ``path`` (relative to the table's
folder, or absolute), optional ``label``, optional ``mpp`` (per-slide override of the level-0
µm/px; for radiology images the pixel spacing in µm), optional ``frame`` (radiology: the frame
of a multi-frame file) and any number of metadata columns (center, scanner, patient, …).
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from pipeline.io.parquet import read_table

REQUIRED_COLUMNS = ("slide_id", "path")
RESERVED_COLUMNS = ("tile_id", "index", "x", "y", "level", "tissue_fraction")
_SLIDE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class CohortError(ValueError):
    """The cohort table is missing or invalid; the message names the table and the problem."""


def validate_cohort(df: pd.DataFrame, base_dir: Path, source: str = "cohort") -> pd.DataFrame:
    """Check columns and ids, resolve paths against ``base_dir``; returns a new frame."""
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise CohortError(f"{source}: missing required column(s) {missing}; has {list(df.columns)}")
    reserved = [c for c in RESERVED_COLUMNS if c in df.columns]
    if reserved:
        raise CohortError(f"{source}: column name(s) {reserved} are reserved for tile outputs")
    df = df.copy()
    if df["slide_id"].isna().any() or df["path"].isna().any():
        rows = df.index[df["slide_id"].isna() | df["path"].isna()].tolist()
        raise CohortError(f"{source}: empty slide_id or path in row(s) {rows}")
    df["slide_id"] = df["slide_id"].astype(str)
    dup = df.loc[df["slide_id"].duplicated(), "slide_id"].unique().tolist()
    if dup:
        raise CohortError(f"{source}: duplicate slide_id {dup}")
    bad = [s for s in df["slide_id"] if not _SLIDE_ID.match(s)]
    if bad:
        raise CohortError(
            f"{source}: slide_id must be letters, digits, '.', '_' or '-' "
            f"(used as a file name); bad: {bad[:5]}"
        )
    df["path"] = [str((base_dir / str(p)).absolute()) for p in df["path"]]
    if "mpp" in df.columns:
        mpp = pd.to_numeric(df["mpp"], errors="coerce")
        bad_mpp = df.loc[df["mpp"].notna() & (mpp.isna() | (mpp <= 0)), "slide_id"].tolist()
        if bad_mpp:
            raise CohortError(f"{source}: mpp must be a positive number; bad for {bad_mpp[:5]}")
        df["mpp"] = mpp
    if "frame" in df.columns:
        frame = pd.to_numeric(df["frame"], errors="coerce")
        bad_frame = df.loc[
            df["frame"].notna() & (frame.isna() | (frame < 0) | (frame % 1 != 0)), "slide_id"
        ].tolist()
        if bad_frame:
            raise CohortError(f"{source}: frame must be an integer >= 0; bad for {bad_frame[:5]}")
        df["frame"] = frame.astype("Int64")
    if df.empty:
        raise CohortError(f"{source}: the cohort has no slides")
    return df.reset_index(drop=True)


def read_cohort(path: Path) -> pd.DataFrame:
    """Read and validate a cohort table (CSV or parquet)."""
    path = Path(path)
    if not path.is_file():
        raise CohortError(f"cohort table not found: {path}")
    try:
        df = read_table(path)
    except Exception as exc:  # noqa: BLE001 - any parser error is reported the same way
        raise CohortError(f"{path}: cannot read cohort table ({exc})") from exc
    return validate_cohort(df, path.parent, source=str(path))


def metadata_columns(cohort: pd.DataFrame) -> list[str]:
    """Columns carried into tile tables (everything except the file path and the reading
    overrides ``mpp`` and ``frame``)."""
    return [c for c in cohort.columns if c not in ("path", "mpp", "frame")]
