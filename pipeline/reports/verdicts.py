"""Verdicts: for each direction, whether its explanation is supported, and why not.

A direction's findings rest on four things: the generator can move the features
independently (generator gate), the inverted tiles are faithful (fidelity gate), the
direction is what the data say (fit, stability, reach), acts on the inverted tiles as on the
samples it was fitted on (editability) and its features move more along it
than along random directions (specificity). Each gate has a figure and thresholds; a figure
past ``fail`` makes the direction ``not_supported``, past ``weak`` (and no failure) ``weak``,
else ``supported``. ``reasons`` lists every gate that was not passed, readably. The
thresholds and why each is where it is: docs/reports.md ("Verdicts").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from pipeline.gan.quality import FEATURE_PR_RATIO_MIN, PAIR_GAP_MAX, W_PR_MIN
from pipeline.reports.effects import per_tile_slopes


@dataclass(frozen=True)
class Gate:
    """A figure and its thresholds (``None``: no such level); ``low`` figures are bad unless
    ``high_is_bad``."""

    name: str
    label: str
    weak: float | None
    fail: float | None
    meaning: str
    high_is_bad: bool = False

    def status(self, value: float | None) -> str:
        """``pass``, ``weak``, ``fail`` or ``n/a`` (no figure: the gate does not apply)."""
        if value is None or not math.isfinite(value):
            return "n/a"
        worse = (lambda v, t: v > t) if self.high_is_bad else (lambda v, t: v < t)
        if self.fail is not None and worse(value, self.fail):
            return "fail"
        if self.weak is not None and worse(value, self.weak):
            return "weak"
        return "pass"

    def reason(self, value: float, status: str) -> str:
        t = self.fail if status == "fail" else self.weak
        sign = ">" if self.high_is_bad else "<"
        return f"{self.label} {value:.3g} {sign} {t:g}: {self.meaning}"


GATES: tuple[Gate, ...] = (
    Gate("auc", "fit AUC", 0.8, 0.7, "a linear model in W does not reproduce the decisions"),
    Gate("stability", "stability", 0.9, 0.7, "fits on two halves of the data disagree"),
    Gate("reach", "reach", 0.5, 0.2, "few shifted tiles cross the decision threshold"),
    Gate(
        "editability",
        "editability",
        0.8,
        0.5,
        "the shift moves the reconstructions' logit less than the samples': the inverted "
        "tiles lie where the direction does not act",
    ),
    Gate(
        "n_specific",
        "specific features",
        None,
        1,
        "no feature moves more than along random directions",
    ),
    Gate("faithful_share", "faithful share", 0.5, 0.2, "most reconstructions are not faithful"),
    Gate("faithful_tiles", "faithful tiles", None, 10, "too few faithful reconstructions"),
    Gate("faithful_slides", "faithful slides", 5, 2, "too few slides for a between-slide CI"),
    Gate(
        "w_participation_ratio",
        "W participation ratio",
        W_PR_MIN,
        None,
        "W's variance lies in a few directions, which move many features together",
    ),
    Gate(
        "feature_pr_ratio",
        "feature PR ratio",
        FEATURE_PR_RATIO_MIN,
        None,
        "the samples' features vary less independently than the tiles'",
    ),
    Gate(
        "probe_disagreements",
        "probe disagreements",
        0,
        None,
        "a finding its pixel-space probe contradicts (agreement.parquet)",
        high_is_bad=True,
    ),
    Gate(
        "worst_pair_corr_gap",
        "worst pair gap",
        PAIR_GAP_MAX,
        None,
        "a pair of features is coupled in the samples as it is not in the tiles",
        high_is_bad=True,
    ),
)
GATE_COLUMNS = [f"gate_{g.name}" for g in GATES]
VERDICT_COLUMNS = ["direction", "kind", "verdict", "reasons", *GATE_COLUMNS]


def judge_direction(figures: dict[str, Any], blocked: list[str] = ()) -> tuple[str, str]:
    """(verdict, reasons) from a direction's gate figures; ``blocked``: reasons that make it
    not supported whatever the figures (not estimable, no faithful tile)."""
    reasons, worst = list(blocked), "fail" if blocked else "pass"
    for gate in GATES:
        value = figures.get(gate.name)
        status = gate.status(None if value is None else float(value))
        if status in ("weak", "fail"):
            reasons.append(gate.reason(float(value), status))
            if status == "fail" or worst == "pass":
                worst = status
    verdict = {"pass": "supported", "weak": "weak", "fail": "not_supported"}[worst]
    return verdict, "; ".join(reasons)


def verdict_rows(directions: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per direction: each dict has ``direction``, ``kind``, its gate figures (keys
    of ``GATES``) and optionally ``blocked`` (reasons it cannot be supported)."""
    rows = []
    for d in directions:
        verdict, reasons = judge_direction(d, d.get("blocked", []))
        row = {
            "direction": d["direction"],
            "kind": d["kind"],
            "verdict": verdict,
            "reasons": reasons,
        }
        for gate in GATES:
            v = d.get(gate.name)
            row[f"gate_{gate.name}"] = np.nan if v is None else float(v)
        rows.append(row)
    return pd.DataFrame(rows, columns=VERDICT_COLUMNS)


def editability(shifts: pd.DataFrame, sample_shifts: pd.DataFrame, direction: str) -> float:
    """Median per-tile slope of the logit against α along ``direction`` on the shifted
    reconstructions ÷ the same on shifted generator samples (``sample_shifts``, the same
    columns): 1 when a shift changes a tile's logit as it changes a sample's. NaN without
    shifts, or when the samples' median slope is not positive (the direction does not raise
    the logit even on samples: ``reach`` and ``auc`` say so)."""
    slopes = []
    for table in (shifts, sample_shifts):
        mine = table[table["direction"] == direction]
        s = per_tile_slopes(mine, ["logit"])["slope"].dropna() if len(mine) else pd.Series([])
        slopes.append(float(s.median()) if len(s) else float("nan"))
    tiles, samples = slopes
    if not (math.isfinite(tiles) and math.isfinite(samples)) or samples <= 0:
        return float("nan")
    return tiles / samples


def reach(shifts: pd.DataFrame, direction: str, threshold: float = 0.5) -> float:
    """Share of the tiles shifted along ``direction`` whose prediction lies on both sides of
    ``threshold`` within the α range (every replicate's shifts pooled); NaN without shifts."""
    d = shifts[shifts["direction"] == direction]
    if d.empty:
        return float("nan")
    keys = ["replicate", "tile_id"] if "replicate" in d else ["tile_id"]
    g = d.groupby(keys)["prediction"]
    return float(((g.min() < threshold) & (g.max() >= threshold)).mean())
