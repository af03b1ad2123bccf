"""Which tiles a stage works on, drawn per slide so that a new slide leaves the other slides'
picks (and their cached parts) alone. Pure functions on tile tables.

One draw serves both per-slide stages: the inversion picks its tiles with it, and the
analysis picks its tiles among the inverted ones with it (until 2026-12-07 the analysis drew a
seeded choice without replacement instead, which picked other tiles whenever it took fewer
than the inversion had).
"""

from __future__ import annotations

import zlib

import numpy as np
import pandas as pd


def _slide_rng(seed: int, slide_id: object) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(str(slide_id).encode())])


def per_slide_mask(tiles: pd.DataFrame, n: int, seed: int) -> np.ndarray:
    """Boolean mask of up to ``n`` tiles per slide: the first ``n`` of a seeded permutation of
    the slide's tiles (the seed mixed with the slide id)."""
    keep = np.zeros(len(tiles), bool)
    for sid, rows in tiles.groupby("slide_id", sort=False).indices.items():
        keep[rows[_slide_rng(seed, sid).permutation(len(rows))[:n]]] = True
    return keep


def per_slide(tiles: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """``per_slide_mask``'s tiles, slides in sorted order, each slide's in ``tiles``' order."""
    picked = tiles[per_slide_mask(tiles, n, seed)]
    return picked.sort_values("slide_id", kind="stable")


def top_confident(tiles: pd.DataFrame, probs: pd.DataFrame, k: int) -> pd.DataFrame:
    """The ``k`` most confident tiles (``probs``: tile_id, prob) of each slide and predicted
    class, in ``tiles``' order."""
    m = tiles[["tile_id", "slide_id"]].assign(_row=np.arange(len(tiles)))
    m = m.merge(probs[["tile_id", "prob"]], on="tile_id", how="inner")
    m["cls"] = m["prob"] >= 0.5
    m["conf"] = (m["prob"] - 0.5).abs()
    top = (
        m.sort_values("conf", ascending=False, kind="stable")
        .groupby(["slide_id", "cls"], sort=False)
        .head(k)
    )
    return tiles.iloc[np.sort(top["_row"].to_numpy())]


def reference_pick(sel: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """The fidelity gate's reference tiles: the ``n`` selected tiles with the smallest hash
    of (seed, tile id), so a new slide changes the set only where its tiles hash lower."""
    h = sel["tile_id"].astype(str).map(lambda t: zlib.crc32(f"{seed}:{t}".encode()))
    return sel.assign(_h=h.to_numpy()).nsmallest(n, "_h").drop(columns="_h")
