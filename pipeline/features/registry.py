"""A registry of named tile features: each is a function of one RGB tile and its µm/px.

Add a feature by decorating a function ``(rgb: uint8 [H, W, 3], ctx: TileContext) -> float``
with ``@feature("name", unit="...", doc="...")``; ``compute_features`` then measures it on
every tile. The shared context computes the expensive parts (colour spaces, nuclei) once per
tile, whatever features ask for them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class FeatureInfo:
    name: str
    fn: Callable[[np.ndarray, Any], float]
    unit: str
    doc: str
    modality: str


REGISTRY: dict[str, FeatureInfo] = {}


def feature(name: str, *, unit: str, doc: str, modality: str = "histology"):
    """Register ``fn`` under ``name`` (names are unique within the registry)."""

    def wrap(fn: Callable[[np.ndarray, Any], float]) -> Callable[[np.ndarray, Any], float]:
        if name in REGISTRY and REGISTRY[name].fn is not fn:
            raise ValueError(f"feature {name!r} is already registered")
        REGISTRY[name] = FeatureInfo(name, fn, unit, doc, modality)
        return fn

    return wrap


def feature_names(modality: str = "histology") -> list[str]:
    """Registered feature names of a modality, in registration order."""
    return [n for n, f in REGISTRY.items() if f.modality == modality]


def compute_features(tiles: np.ndarray, mpp: float, names: Iterable[str] | None = None,
                     context: Callable[[np.ndarray, float], Any] | None = None
                     ) -> pd.DataFrame:  # fmt: skip
    """One row per tile of uint8 [N, H, W, 3], one float column per feature."""
    from pipeline.features.histology import TileContext

    names = list(names) if names is not None else feature_names()
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        raise KeyError(f"unknown features {unknown}; registered: {sorted(REGISTRY)}")
    make = context or TileContext
    rows = []
    for rgb in tiles:
        ctx = make(rgb, mpp)
        rows.append({n: float(REGISTRY[n].fn(rgb, ctx)) for n in names})
    return pd.DataFrame(rows, columns=names)
