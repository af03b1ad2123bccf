"""Pixel-space perturbations of real tiles, each named, parametrised by a strength and
documented (docs/reports.md, "Probes").

Stain probes work in optical-density space with the stain matrix of scikit-image's
``rgb2hed`` (Ruifrok & Johnston's H&E-DAB vectors, ``skimage.color.rgb_from_hed``): the
colour deconvolution the analysis' stain features measure with, so "eosin ×1.3" moves what
``eosin_mean`` reads. The unmixing is done here without ``rgb2hed``'s clipping of negative
concentrations, so tile → concentrations → tile is exact up to 8-bit rounding. Dedicated
stain libraries (staintools, torchstain) pin old numpy/torch or are not installable here.
Stain normalisation re-stains a tile with another center's stain vectors (Macenko et
al. 2009, estimated from each center's tiles): it is unmixed with its own center's vectors and
mixed with the other's, its concentrations kept, so its content stays as it is. Measured on
the known-answer cohort (JPEG slides read at 1 µm/px; 2026-12-07), the per-slide mean logit
change of this swap was within 0.35 (mean absolute error) of re-rendering the slide in the
other center's stain; adding Macenko's rescaling of the concentrations by their 99th
percentiles made it 0.99, matching each tile's H and E means to the other center's
(Reinhard's method in OD space) 1.57: those statistics follow the tissue's content (a
tumor-rich center has more nucleus), and the swap then moved content, not stain.

Scanner-like probes: Gaussian blur with σ in µm (converted with the tile's µm/px, so it means
the same at any resolution), JPEG re-compression, brightness, contrast, gamma and Gaussian
sensor noise (in grey levels). Radiology tiles (1 channel) get window level and width,
contrast, gamma, noise and blur; stain probes are skipped for them.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from PIL import Image
from scipy import ndimage
from skimage.color import hed_from_rgb, rgb_from_hed

STAINED_OD = 0.05  # a pixel is stained when every channel's optical density exceeds this


@dataclass(frozen=True)
class Probe:
    """One perturbation at one strength. ``family`` groups strengths of one kind (the
    dose-response curve); ``identity`` is the strength that changes nothing."""

    family: str
    strength: float
    identity: float
    target: str = ""  # stain normalisation: the center whose stain is the target

    @property
    def name(self) -> str:
        return f"{self.family}:{self.target}" if self.target else self.family


def _u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def _hed(rgb: np.ndarray) -> np.ndarray:
    """H, E, D concentrations of uint8 RGB [..., 3] (OD unmixed with ``hed_from_rgb``;
    0 counts as 1: no infinite OD)."""
    od = -np.log(np.maximum(rgb, 1).astype(np.float64) / 255.0)
    return od @ hed_from_rgb


def _from_hed(hed: np.ndarray) -> np.ndarray:
    return _u8(255.0 * np.exp(-(hed @ rgb_from_hed)))


def stain_scale(rgb: np.ndarray, channel: int, factor: float) -> np.ndarray:
    """Hematoxylin (channel 0) or eosin (1) concentration × ``factor``; the rest as it was
    (the roundtrip of the untouched channels is exact up to 8-bit rounding)."""
    hed = _hed(rgb)
    hed[..., channel] *= factor
    return _from_hed(hed)


def _tissue_od(rgb: np.ndarray) -> np.ndarray:
    """Optical densities [n, 3] of the stained pixels of uint8 RGB [..., 3] (every channel's
    OD above ``STAINED_OD``, Macenko's β)."""
    od = -np.log(np.maximum(rgb, 1).reshape(-1, 3).astype(np.float64) / 255.0)
    keep = (od > STAINED_OD).all(axis=1)
    return od[keep] if keep.sum() >= 16 else od


def stain_stats(rgb: np.ndarray) -> np.ndarray:
    """The stain of tiles [N, H, W, 3] (Macenko et al. 2009): the unit OD vectors of
    hematoxylin and eosin (rows), from the 1st and 99th percentile angles of the stained
    pixels' OD in the plane of its two main axes: [2, 3]. A property of the stain, not of how
    much nucleus or stroma the tiles hold."""
    od = _tissue_od(rgb)
    _, vecs = np.linalg.eigh(np.cov(od, rowvar=False))
    plane = vecs[:, 1:]  # the two main axes
    proj = od @ plane
    phi = np.arctan2(proj[:, 1], proj[:, 0])
    lo, hi = np.percentile(phi, [1, 99])
    v = np.stack([plane @ [np.cos(t), np.sin(t)] for t in (lo, hi)])
    v *= np.sign(v.sum(axis=1, keepdims=True))  # OD vectors are positive
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v[np.argsort(-v[:, 0])]  # hematoxylin absorbs more red than eosin


def stain_normalise(rgb: np.ndarray, source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Tiles stained with ``source``'s vectors (``stain_stats``) re-stained with ``target``'s:
    each pixel's H and E concentrations, unmixed with the source's vectors, mixed with the
    target's; what the two stains do not explain (glass, residue) is kept. The tissue's
    content and the amounts of stain are untouched."""
    od = -np.log(np.maximum(rgb, 1).astype(np.float64) / 255.0)
    conc = od @ np.linalg.pinv(source)
    rest = od - conc @ source
    return _u8(255.0 * np.exp(-(conc @ target + rest)))


def blur(img: np.ndarray, sigma_um: float, mpp: np.ndarray) -> np.ndarray:
    """Gaussian blur of σ = ``sigma_um`` µm at each tile's µm/px."""
    out = np.empty_like(img)
    for i, tile in enumerate(img):
        s = sigma_um / float(mpp[i])
        out[i] = _u8(ndimage.gaussian_filter(tile.astype(np.float32), (s, s, 0)))
    return out


def jpeg(img: np.ndarray, quality: float) -> np.ndarray:
    """Re-compressed as JPEG at ``quality`` (PIL, 4:2:0 for RGB)."""
    out = np.empty_like(img)
    for i, tile in enumerate(img):
        buf = io.BytesIO()
        grey = tile.shape[-1] == 1
        Image.fromarray(tile[..., 0] if grey else tile).save(buf, "JPEG", quality=int(quality))
        dec = np.asarray(Image.open(io.BytesIO(buf.getvalue())))
        out[i] = dec[..., None] if grey else dec
    return out


def noise(img: np.ndarray, sd: float, seed: int) -> np.ndarray:
    """Gaussian sensor noise of ``sd`` grey levels (seeded: the same draw for every run)."""
    rng = np.random.default_rng(seed)
    return _u8(img.astype(np.float32) + rng.normal(0, sd, img.shape))


def _tone(img: np.ndarray, fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    return _u8(fn(img.astype(np.float64) / 255.0) * 255.0)


def contrast(img: np.ndarray, factor: float) -> np.ndarray:
    """Each tile's deviations from its mean grey × ``factor``."""
    return _tone(img, lambda x: x.mean(axis=(1, 2, 3), keepdims=True) * (1 - factor) + x * factor)


PERTURBATIONS: dict[str, tuple[float, str, str]] = {
    # family: (identity strength, modality it applies to, what the strength is)
    "hematoxylin": (1.0, "histology", "factor on the hematoxylin concentration"),
    "eosin": (1.0, "histology", "factor on the eosin concentration"),
    "stain_normalise": (0.0, "histology", "re-stained with another center's stain (Macenko)"),
    "blur": (0.0, "any", "Gaussian σ in µm"),
    "jpeg": (100.0, "any", "JPEG quality"),
    "brightness": (0.0, "any", "added to every pixel, in [0, 1] units"),
    "contrast": (1.0, "any", "factor on deviations from the tile's mean"),
    "gamma": (1.0, "any", "exponent on [0, 1] values"),
    "noise": (0.0, "any", "SD of Gaussian noise in grey levels"),
    "window_level": (0.0, "radiology", "window centre shift, in [0, 1] units"),
    "window_width": (1.0, "radiology", "factor on the window width"),
}


def apply_probe(
    img: np.ndarray,
    probe: Probe,
    mpp: np.ndarray,
    seed: int = 0,
    targets: dict[str, np.ndarray] | None = None,
    groups: np.ndarray | None = None,
) -> np.ndarray:
    """``img`` (uint8 [N, H, W, C]) perturbed by ``probe``; for stain normalisation
    ``targets`` (each group's ``stain_stats``) and ``groups`` (each tile's group)."""
    f, s = probe.family, probe.strength
    if f in ("hematoxylin", "eosin"):
        return stain_scale(img, 0 if f == "hematoxylin" else 1, s)
    if f == "stain_normalise":
        targets = targets or {}
        out = np.empty_like(img)
        for g in np.unique(groups):
            rows = groups == g
            out[rows] = stain_normalise(img[rows], targets[str(g)], targets[probe.target])
        return out
    if f == "blur":
        return blur(img, s, mpp)
    if f == "jpeg":
        return jpeg(img, s)
    if f == "noise":
        return noise(img, s, seed)
    if f == "contrast":
        return contrast(img, s)
    if f == "brightness":
        return _tone(img, lambda x: x + s)
    if f == "gamma":
        return _tone(img, lambda x: np.clip(x, 0, 1) ** s)
    if f == "window_level":  # the displayed window moves up by s: the image darkens
        return _tone(img, lambda x: x - s)
    if f == "window_width":  # a window s× as wide: contrast about mid-grey ÷ s
        return _tone(img, lambda x: 0.5 + (x - 0.5) / s)
    raise ValueError(f"unknown perturbation family {f!r}")


def probe_list(
    strengths: dict[str, list[float]], modality: str, centers: list[str] = ()
) -> list[Probe]:
    """Every probe of the configured ``strengths`` (family → strengths) that applies to
    ``modality``, plus stain normalisation to each of ``centers`` (histology)."""
    out = []
    for family, values in strengths.items():
        identity, applies, _ = PERTURBATIONS[family]
        if applies not in ("any", modality):
            continue
        out += [Probe(family, float(v), identity) for v in values]
    if modality == "histology":
        out += [Probe("stain_normalise", 1.0, 0.0, target=str(c)) for c in centers]
    return out


def probe_scores(
    tiles: np.ndarray,
    mpp: np.ndarray,
    ids: pd.DataFrame,
    probes: list[Probe],
    score: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
    seed: int = 0,
    targets: dict[str, np.ndarray] | None = None,
) -> pd.DataFrame:
    """Every tile (uint8 [N, H, W, C], with ``ids``: tile_id, slide_id) under every probe,
    scored by ``score`` (tiles → (logits, probabilities)): one row per tile × probe with the
    unperturbed tile's ``base_logit`` and ``base_prediction``. Stain normalisation to a
    tile's own center is skipped (``targets`` has a ``center`` per tile in ``ids``)."""
    base_logit, base_prob = score(tiles)
    rows = []
    for k, probe in enumerate(probes):
        keep = np.ones(len(tiles), bool)
        if probe.family == "stain_normalise" and "center" in ids:
            keep = ids["center"].astype(str).to_numpy() != probe.target
        if not keep.any():
            continue
        groups = ids["center"].astype(str).to_numpy()[keep] if "center" in ids else None
        out = apply_probe(tiles[keep], probe, mpp[keep], seed + k, targets, groups)
        logit, prob = score(out)
        rows.append(
            ids[keep].assign(
                perturbation=probe.name,
                family=probe.family,
                target=probe.target,
                strength=probe.strength,
                logit=logit,
                prediction=prob,
                base_logit=base_logit[keep],
                base_prediction=base_prob[keep],
            )
        )
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()
