"""A registry of named tile features, one namespace per modality (histology, radiology).

Add a feature by decorating a function ``(image, ctx) -> float`` with
``@feature("name", unit="...", doc="...", modality="histology" | "radiology")``;
``compute_features`` then measures it on every tile. Histology features receive the RGB tile
(uint8 ``[H, W, 3]``), radiology features the grey tile (uint8 ``[H, W]``). The shared
context computes the expensive parts (colour spaces, nuclei, the GLCM) once per tile, whatever
features ask for them. The same name may exist in two modalities (``sharpness``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

MODALITIES = ("histology", "radiology")


@dataclass(frozen=True)
class FeatureInfo:
    name: str
    fn: Callable[[np.ndarray, Any], float]
    unit: str
    doc: str
    modality: str
    period: float | None = None  # circular features (hue): values a period apart are equal


REGISTRIES: dict[str, dict[str, FeatureInfo]] = {m: {} for m in MODALITIES}
REGISTRY = REGISTRIES["histology"]  # the histology features (the original, flat registry)
CONTEXTS: dict[str, Callable[[np.ndarray, float], Any]] = {}


def feature(
    name: str, *, unit: str, doc: str, modality: str = "histology", period: float | None = None
):
    """Register ``fn`` under ``name`` (names are unique within a modality); ``period`` marks
    a circular feature (hue: 1 turn), which ``unwrap_circular`` makes comparable."""
    if modality not in REGISTRIES:
        raise ValueError(f"unknown modality {modality!r}; one of {list(REGISTRIES)}")
    registry = REGISTRIES[modality]

    def wrap(fn: Callable[[np.ndarray, Any], float]) -> Callable[[np.ndarray, Any], float]:
        if name in registry and registry[name].fn is not fn:
            raise ValueError(f"feature {name!r} is already registered for {modality}")
        registry[name] = FeatureInfo(name, fn, unit, doc, modality, period)
        return fn

    return wrap


def register_context(modality: str, factory: Callable[[np.ndarray, float], Any]) -> None:
    """The per-tile context class of a modality (``factory(image, mpp)``)."""
    CONTEXTS[modality] = factory


def feature_names(modality: str = "histology") -> list[str]:
    """Registered feature names of a modality, in registration order."""
    if modality not in REGISTRIES:
        raise ValueError(f"unknown modality {modality!r}; one of {list(REGISTRIES)}")
    return list(REGISTRIES[modality])


def circular_mean(values: np.ndarray | pd.Series, period: float) -> float:
    """Circular mean of ``values`` in ``[0, period)`` (NaNs skipped; NaN when none)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if not len(v):
        return float("nan")
    z = np.exp(2j * np.pi * v / period).mean()
    return float((np.angle(z) / (2 * np.pi) * period) % period)


def unwrap_circular(
    table: pd.DataFrame, modality: str = "histology", ref: pd.DataFrame | None = None
) -> pd.DataFrame:
    """``table`` with every circular feature column (``period`` set) moved by whole periods
    to lie within half a period of the circular mean of ``ref``'s column (default
    ``table``'s own). Means, SDs, slopes and regressions of the result are then those of the
    angle, not of where [0, 1) happens to cut it: a pink tile at hue 0.98 and one at 0.02
    are 0.04 turns apart, not 0.96. Other columns are returned unchanged."""
    ref = table if ref is None else ref
    out = table.copy()
    for name in table.columns:
        info = REGISTRIES[modality].get(name)
        if info is None or info.period is None or name not in ref:
            continue
        centre = circular_mean(ref[name], info.period)
        if np.isfinite(centre):
            x = table[name].to_numpy(np.float64)
            half = info.period / 2
            out[name] = centre + ((x - centre + half) % info.period) - half
    return out


def _as_modality_image(tile: np.ndarray, modality: str) -> np.ndarray:
    """What a feature function receives: RGB ``[H, W, 3]`` or grey ``[H, W]`` (uint8)."""
    if modality == "radiology":
        if tile.ndim == 3 and tile.shape[-1] == 1:
            return tile[..., 0]
        if tile.ndim == 3 and tile.shape[-1] == 3:  # an RGB rendering of a grey image
            return np.round(tile.astype(np.float32).mean(-1)).astype(np.uint8)
    return tile


def compute_features(
    tiles: np.ndarray,
    mpp: float | np.ndarray,
    names: Iterable[str] | None = None,
    context: Callable[[np.ndarray, float], Any] | None = None,
    modality: str = "histology",
) -> pd.DataFrame:
    """One row per tile of uint8 [N, H, W, C], one float column per feature of ``modality``.

    ``mpp``: the tiles' µm/px, one value or one per tile (radiology: the image's pixel spacing
    after resizing; NaN when unknown)."""
    from pipeline.features import histology as _h  # noqa: F401  (registers the built-ins)
    from pipeline.features import radiology as _r  # noqa: F401

    registry = REGISTRIES.get(modality)
    if registry is None:
        raise ValueError(f"unknown modality {modality!r}; one of {list(REGISTRIES)}")
    names = list(names) if names is not None else feature_names(modality)
    unknown = [n for n in names if n not in registry]
    if unknown:
        raise KeyError(f"unknown features {unknown}; registered for {modality}: {sorted(registry)}")
    make = context or CONTEXTS[modality]
    mpps = np.broadcast_to(np.asarray(mpp, dtype=np.float64), (len(tiles),))
    rows = []
    for tile, m in zip(tiles, mpps, strict=True):
        img = _as_modality_image(tile, modality)
        ctx = make(img, float(m))
        rows.append({n: float(registry[n].fn(img, ctx)) for n in names})
    return pd.DataFrame(rows, columns=names)
