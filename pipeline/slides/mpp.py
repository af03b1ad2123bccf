"""Resolve the level-0 resolution (µm per pixel) of a slide."""

from __future__ import annotations

import math

# Convention used when only the objective power is known: 10x ↔ 1.0 µm/px (40x ↔ 0.25).
MPP_AT_1X = 10.0


def _valid(value: float | None) -> bool:
    return value is not None and math.isfinite(value) and value > 0


def resolve_mpp(
    *,
    file_mpp_x: float | None,
    file_mpp_y: float | None,
    objective_power: float | None,
    cohort_mpp: float | None,
    default_mpp: float | None,
) -> tuple[float, float, str] | None:
    """Return ``(mpp_x, mpp_y, source)`` or None when no source gives a resolution.

    Order: the cohort's ``mpp`` column (an explicit per-slide override, for files whose
    metadata is wrong or missing), the file's ``openslide.mpp-x/y``, its objective power
    (``10 / power``), then the config's ``tiling.default_mpp``.
    """
    if _valid(cohort_mpp):
        return float(cohort_mpp), float(cohort_mpp), "cohort"
    if _valid(file_mpp_x):
        mpp_y = file_mpp_y if _valid(file_mpp_y) else file_mpp_x
        return float(file_mpp_x), float(mpp_y), "file"
    if _valid(objective_power):
        mpp = MPP_AT_1X / float(objective_power)
        return mpp, mpp, "objective_power"
    if _valid(default_mpp):
        return float(default_mpp), float(default_mpp), "config_default"
    return None
