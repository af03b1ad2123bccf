"""Is the classifier's direction entangled with site, scanner or stain? Cosines between
directions against a random-direction null, and how much of the prediction change survives
when the metadata directions are projected out (conditional manipulation, InterFaceGAN)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.directions import Direction

# The sections' columns, also when a section has no rows (no classifier direction could be
# fitted): cohort_bias.parquet keeps one schema for its readers (the report, pandas, duckdb).
COSINE_COLUMNS = ["section", "direction", "other", "cosine", "abs_cosine", "null_q95",
                  "null_q99", "above_null"]  # fmt: skip
CONDITIONAL_COLUMNS = ["section", "direction", "other", "logit_slope",
                       "logit_slope_conditional", "survived"]  # fmt: skip


def cosine_rows(directions: list[Direction], null: dict[str, float]) -> pd.DataFrame:
    """Every classifier direction against every other direction: cosine, |cosine|, the null's
    95th/99th percentiles of |cosine|, and ``above_null`` (|cosine| > the 99th)."""
    rows = []
    for a in (d for d in directions if d.kind == "classifier"):
        for b in directions:
            if b.name == a.name or b.kind == "conditional":
                continue
            cos = float(np.dot(a.vector, b.vector))
            rows.append({"section": "cosine", "direction": a.name, "other": b.name,
                         "cosine": cos, "abs_cosine": abs(cos), "null_q95": null["q95"],
                         "null_q99": null["q99"],
                         "above_null": abs(cos) > null["q99"]})  # fmt: skip
    return pd.DataFrame(rows, columns=COSINE_COLUMNS)


def prediction_slopes(shifts: pd.DataFrame, value: str = "logit") -> pd.Series:
    """Cohort mean of per-tile slopes of the classifier's ``value`` against α, per direction."""

    def slope(g: pd.DataFrame) -> float:
        x, y = g["alpha"].to_numpy(), g[value].to_numpy()
        den = ((x - x.mean()) ** 2).sum()
        return float(((x - x.mean()) * (y - y.mean())).sum() / den) if den > 0 else np.nan

    per_tile = shifts.groupby(["direction", "tile_id"], sort=False)[["alpha", value]].apply(slope)
    return per_tile.groupby(level="direction").mean()


def conditional_rows(shifts: pd.DataFrame, pairs: dict[str, str]) -> pd.DataFrame:
    """For each conditional direction (``pairs``: conditional name → original name): the
    prediction slope along it, along the original, and the share that survives."""
    slopes = prediction_slopes(shifts)
    rows = []
    for cond, orig in pairs.items():
        if cond not in slopes or orig not in slopes:
            continue
        s_c, s_o = float(slopes[cond]), float(slopes[orig])
        rows.append({"section": "conditional", "direction": orig, "other": cond,
                     "logit_slope": s_o, "logit_slope_conditional": s_c,
                     "survived": s_c / s_o if s_o else np.nan})  # fmt: skip
    return pd.DataFrame(rows, columns=CONDITIONAL_COLUMNS)
