"""Render synthetic H&E whole-slide images in optical-density space (Beer–Lambert).

``RGB = 255 · exp(−(c_H · v_H + c_E · v_E + OD_BACKGROUND)) + noise``, with per-center stain
vectors ``v_H``, ``v_E``. Tissue is thresholded smooth noise; stroma is fibrous eosin; nuclei are
elliptical hematoxylin blobs (darker rim, chromatin speckle) that never overlap, so they stay
discrete and countable at 1 µm/px. Everything is drawn from ``np.random.default_rng(slide_seed)``
in a fixed order: the same spec gives byte-identical pixels.

Speed: tissue and stroma are computed on a ~1 µm grid and upsampled with ``np.repeat``; nuclei
are stamped from a per-slide bank of precomputed ellipses; the final colour is one table look-up
per pixel (quantised hematoxylin × quantised eosin × 16 noise levels → RGB).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from scipy import fft as sfft
from scipy import ndimage
from scipy.spatial import cKDTree
from scipy.special import ndtri

Vec3 = tuple[float, float, float]


def _unit(v: Vec3) -> Vec3:
    n = float(np.linalg.norm(v))
    return (v[0] / n, v[1] / n, v[2] / n)


@dataclass(frozen=True)
class Stain:
    """A staining protocol: unit OD vectors (R, G, B) and concentration multipliers."""

    name: str
    h: Vec3  # hematoxylin OD vector (unit length)
    e: Vec3  # eosin OD vector (unit length)
    hematoxylin: float = 1.0  # multiplies nuclear hematoxylin concentration
    eosin: float = 1.0  # multiplies stroma eosin concentration

    def matrix(self) -> np.ndarray:
        """3×3 stain matrix, rows H, E and their unit cross product (for colour deconvolution:
        ``concentrations = od @ inv(matrix)``)."""
        h, e = np.asarray(self.h), np.asarray(self.e)
        r = np.cross(h, e)
        return np.stack([h, e, r / np.linalg.norm(r)])


# Ruifrok & Johnston (2001) H&E optical-density vectors (unnormalised).
RUIFROK_H: Vec3 = (0.650, 0.704, 0.286)
RUIFROK_E: Vec3 = (0.072, 0.990, 0.105)

STAINS: dict[str, Stain] = {
    # Center A: the standard vectors.
    "standard": Stain("standard", _unit(RUIFROK_H), _unit(RUIFROK_E)),
    # Center B: hematoxylin bluer, eosin rotated toward purple (absorbs more red), 1.45× eosin.
    "purple": Stain(
        "purple", _unit((0.480, 0.760, 0.440)), _unit((0.300, 0.930, 0.060)), 1.0, 1.45
    ),
    # Centers C and D (only with plan_cohort(centers=3 or 4)).
    "pale": Stain("pale", _unit((0.620, 0.700, 0.350)), _unit((0.050, 0.960, 0.280)), 0.8, 0.7),
    "orange": Stain("orange", _unit((0.600, 0.650, 0.460)), _unit((0.010, 0.860, 0.510)), 1.1, 1.2),
}
CENTER_STAINS: dict[str, str] = {"A": "standard", "B": "purple", "C": "pale", "D": "orange"}

OD_BACKGROUND: Vec3 = (0.03, 0.035, 0.03)  # glass and mounting medium
NOISE_SD = 1.5  # grey levels of per-pixel noise (16 Gaussian quantiles)

# Stroma: noise smeared into fibres (length × width, µm) along N_FIBRE_ANGLES directions.
FIBRE_LENGTH_UM, FIBRE_WIDTH_UM, N_FIBRE_ANGLES = 12.0, 0.9, 4
STROMA_BASE, STROMA_FIBRE = 0.26, 0.24  # eosin = base + fibre · streaks^1.5 · (0.4 + density)
TISSUE_FRACTION = 0.55  # of the slide's area, before holes

# Nuclei: radius scale U(0.85, 1.15) × slide radius, aspect a/b U(1, 1.6) (area πr² kept),
# orientation U(0, π), each quantised for the stamp bank; at least MIN_GAP_UM apart edge to edge.
SIZE_BINS, ASPECT_BINS, ANGLE_BINS = 8, 4, 16
SIZE_RANGE, ASPECT_RANGE = (0.85, 1.15), (1.0, 1.6)
MIN_GAP_UM = 0.5
NUCLEUS_H = (1.05, 1.45)  # hematoxylin concentration of a nucleus, U(lo, hi)
CHROMATIN = (0.7, 1.3)  # per-pixel multiplicative speckle, U(lo, hi)
RIM = (0.35, 0.85, 0.12)  # rim gain, position (fraction of radius), width

# Look-up-table quantisation of the raw concentrations.
H_MAX, E_MAX, NOISE_LEVELS = 2.6, 1.6, 16


def center_stain(center: str) -> Stain:
    """The stain of a center ('A' → standard, 'B' → purple, …)."""
    return STAINS[CENTER_STAINS[center]]


# ----------------------------------------------------------------------------- noise fields


def _lerp_axis(a: np.ndarray, step: int, n: int, axis: int) -> np.ndarray:
    """Linear interpolation of ``a`` along ``axis`` onto ``n`` samples ``step`` times finer
    (cell-centred grids, like ``ndimage.zoom(grid_mode=True)``)."""
    size = a.shape[axis]
    pos = np.clip((np.arange(n, dtype=np.float32) + 0.5) / step - 0.5, 0, size - 1)
    i0 = np.minimum(pos.astype(np.intp), size - 2)
    t = (pos - i0).astype(np.float32)
    t = t[:, None] if axis == 0 else t[None, :]
    lo = np.take(a, i0, axis=axis)
    hi = np.take(a, i0 + 1, axis=axis)
    hi -= lo
    hi *= t
    hi += lo
    return hi


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], scale_px: float) -> np.ndarray:
    """Zero-mean, unit-SD noise with features ~``scale_px`` wide: float32 [H, W].

    Drawn on a coarse grid, blurred and linearly upsampled, so large scales cost no more
    than small ones.
    """
    step = max(1, int(scale_px / 3))
    low = (shape[0] // step + 2, shape[1] // step + 2)
    field = ndimage.gaussian_filter(rng.standard_normal(low, dtype=np.float32), 1.5)
    if step > 1:
        field = _lerp_axis(_lerp_axis(field, step, shape[0], 0), step, shape[1], 1)
    field = field[: shape[0], : shape[1]]
    field -= field.mean()
    field /= field.std() + 1e-8
    return field


def tissue_mask(rng: np.random.Generator, shape: tuple[int, int], cell_um: float) -> np.ndarray:
    """Irregular tissue (~54 % of the slide, off its borders) with ragged edges and holes.

    ``shape`` is the grid of ``cell_um``-sized cells; returns bool [H, W].
    """
    field = smooth_noise(rng, shape, 500.0 / cell_um)
    field += 0.2 * smooth_noise(rng, shape, 30.0 / cell_um)  # ragged edges
    holes = smooth_noise(rng, shape, 40.0 / cell_um) > 2.3  # a few small holes
    yy = np.linspace(-1.0, 1.0, shape[0], dtype=np.float32)[:, None]
    xx = np.linspace(-1.0, 1.0, shape[1], dtype=np.float32)[None, :]
    # Tissue stays off the slide's borders: a fall-off toward the edges and corners.
    field -= 6.0 * np.clip(np.hypot(yy, xx) - 0.75, 0, None)
    field -= 20.0 * np.clip(np.maximum(np.abs(yy), np.abs(xx)) - 0.9, 0, None)
    mask = field > np.quantile(field[::4, ::4], 1.0 - TISSUE_FRACTION)
    mask &= ~holes
    margin = max(2, min(shape) // 100)  # stray crumbs at the very edge
    mask[:margin] = mask[-margin:] = False
    mask[:, :margin] = mask[:, -margin:] = False
    return mask


def _line_kernel(length: float, width: float, angle: float) -> np.ndarray:
    half = int(np.ceil(length))
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float32)
    along = xx * np.cos(angle) + yy * np.sin(angle)
    across = -xx * np.sin(angle) + yy * np.cos(angle)
    k = np.exp(-0.5 * (along / (length / 2)) ** 2 - 0.5 * (across / max(width, 0.3)) ** 2)
    return k / k.sum()


@lru_cache(maxsize=4)
def _fibre_spectra(shape: tuple[int, int], cell_um: float) -> tuple[np.ndarray, ...]:
    """rFFTs of the fibre kernels at each angle, wrapped around the origin (circular)."""
    out = []
    for k in range(N_FIBRE_ANGLES):
        kern = _line_kernel(
            FIBRE_LENGTH_UM / cell_um, FIBRE_WIDTH_UM / cell_um, k * np.pi / N_FIBRE_ANGLES
        )
        half = kern.shape[0] // 2
        pad = np.zeros(shape, dtype=np.float32)
        pad[
            np.ix_(np.arange(-half, half + 1) % shape[0], np.arange(-half, half + 1) % shape[1])
        ] = kern
        out.append(sfft.rfft2(pad, workers=1))
    return tuple(out)


def stroma_eosin(rng: np.random.Generator, shape: tuple[int, int], cell_um: float) -> np.ndarray:
    """Raw eosin of fibrous stroma on the ``cell_um`` grid, float32 in ~[0.22, 2]: wavy collagen
    streaks whose direction turns smoothly (noise smeared along 4 directions and blended by a
    smooth orientation field), with patches of denser and looser fibres."""
    fft_shape = (sfft.next_fast_len(shape[0], real=True), sfft.next_fast_len(shape[1], real=True))
    noise = rng.standard_normal(fft_shape, dtype=np.float32)
    theta = smooth_noise(rng, shape, 120.0 / cell_um) * 1.2
    cos2, sin2 = np.cos(2 * theta), np.sin(2 * theta)
    spectrum = sfft.rfft2(noise, workers=1)
    streaks = np.zeros(shape, dtype=np.float32)
    total = np.zeros(shape, dtype=np.float32)
    for k, kernel_spectrum in enumerate(_fibre_spectra(fft_shape, cell_um)):
        alpha = 2 * k * np.pi / N_FIBRE_ANGLES  # Python floats keep the maths in float32
        weight = np.exp(3.0 * (cos2 * float(np.cos(alpha)) + sin2 * float(np.sin(alpha))))
        smeared = sfft.irfft2(spectrum * kernel_spectrum, s=fft_shape, workers=1)
        streaks += weight * smeared[: shape[0], : shape[1]]
        total += weight
    streaks /= total
    streaks /= streaks.std() + 1e-8
    fibres = np.clip(streaks, 0, None) ** 1.5
    density = 0.5 + 0.5 * np.tanh(smooth_noise(rng, shape, 60.0 / cell_um))
    return STROMA_BASE + STROMA_FIBRE * fibres * (0.4 + density)


# ----------------------------------------------------------------------------- nuclei


@dataclass(frozen=True, eq=False)
class Nuclei:
    """Nucleus centres (µm) and quantised shape bins (size, aspect, angle) of one slide."""

    y_um: np.ndarray
    x_um: np.ndarray
    size_bin: np.ndarray
    aspect_bin: np.ndarray
    angle_bin: np.ndarray

    @property
    def count(self) -> int:
        return len(self.y_um)

    def axes_um(self, radius_um: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Semi-axes a ≥ b (µm) and orientation (rad) for a slide radius of ``radius_um``."""
        return _axes(self.size_bin, self.aspect_bin, self.angle_bin, radius_um)

    def bank_index(self) -> np.ndarray:
        """Index of each nucleus' stamp in ``_stamp_bank``."""
        return (self.size_bin * ASPECT_BINS + self.aspect_bin) * ANGLE_BINS + self.angle_bin


def _axes(
    size_bin: np.ndarray, aspect_bin: np.ndarray, angle_bin: np.ndarray, radius_um: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r = radius_um * (SIZE_RANGE[0] + np.diff(SIZE_RANGE)[0] * (size_bin + 0.5) / SIZE_BINS)
    aspect = ASPECT_RANGE[0] + np.diff(ASPECT_RANGE)[0] * (aspect_bin + 0.5) / ASPECT_BINS
    return r * np.sqrt(aspect), r / np.sqrt(aspect), angle_bin * (np.pi / ANGLE_BINS)


def radius_toward(a: np.ndarray, b: np.ndarray, theta: np.ndarray, phi: np.ndarray) -> np.ndarray:
    """Distance from an ellipse's centre to its boundary in direction ``phi``."""
    psi = phi - theta
    return a * b / np.hypot(b * np.cos(psi), a * np.sin(psi))


def place_nuclei(
    rng: np.random.Generator,
    tissue: np.ndarray,
    cell_um: float,
    per_mm2: float,
    radius_um: float,
    max_rounds: int = 12,
) -> Nuclei:
    """Random sequential addition of non-overlapping ellipses with centres in tissue.

    Aims at ``per_mm2`` nuclei per mm² of tissue; two nuclei stay at least ``MIN_GAP_UM`` apart
    along the line joining their centres. Reaches the target up to ~3300/mm² at 5.7 µm radius.
    """
    h_um, w_um = tissue.shape[0] * cell_um, tissue.shape[1] * cell_um
    frac = float(tissue.mean())
    target = int(round(per_mm2 * frac * h_um * w_um * 1e-6))
    y, x = np.zeros(0), np.zeros(0)
    sb = ab = tb = np.zeros(0, dtype=np.int16)
    for _ in range(max_rounds):
        need = target - len(y)
        if need <= 0 or frac == 0:
            break
        m = int(2.5 * need / frac) + 64
        cy, cx = rng.uniform(0, h_um, m), rng.uniform(0, w_um, m)
        c_sb = rng.integers(0, SIZE_BINS, m, dtype=np.int16)
        c_ab = rng.integers(0, ASPECT_BINS, m, dtype=np.int16)
        c_tb = rng.integers(0, ANGLE_BINS, m, dtype=np.int16)
        inside = tissue[
            np.minimum((cy / cell_um).astype(np.int64), tissue.shape[0] - 1),
            np.minimum((cx / cell_um).astype(np.int64), tissue.shape[1] - 1),
        ]
        n0 = len(y)
        y, x = np.r_[y, cy[inside]], np.r_[x, cx[inside]]
        sb, ab, tb = np.r_[sb, c_sb[inside]], np.r_[ab, c_ab[inside]], np.r_[tb, c_tb[inside]]
        a, b, theta = _axes(sb, ab, tb, radius_um)
        pairs = cKDTree(np.c_[y, x]).query_pairs(2 * a.max() + MIN_GAP_UM, output_type="ndarray")
        pairs = pairs[pairs.max(axis=1) >= n0]  # accepted nuclei never conflict with each other
        i, j = pairs.min(axis=1), pairs.max(axis=1)
        dy, dx = y[j] - y[i], x[j] - x[i]
        phi = np.arctan2(dy, dx)
        reach = radius_toward(a[i], b[i], theta[i], phi) + radius_toward(a[j], b[j], theta[j], phi)
        clash = np.hypot(dy, dx) < reach + MIN_GAP_UM
        i, j = i[clash], j[clash]
        order = np.lexsort((j, i))
        keep = np.ones(len(y), dtype=bool)
        for p, q in zip(i[order].tolist(), j[order].tolist(), strict=True):
            if keep[p] and keep[q]:
                keep[q] = False
        new = np.flatnonzero(keep[n0:])[:need] + n0
        sel = np.r_[np.arange(n0), new]
        y, x, sb, ab, tb = y[sel], x[sel], sb[sel], ab[sel], tb[sel]
        if len(new) == 0:
            break
    return Nuclei(y, x, sb, ab, tb)


def _stamp_bank(radius_px: float, anti_alias_px: float) -> tuple[np.ndarray, int]:
    """Raw hematoxylin of every (size, aspect, angle) ellipse on a P×P grid centred on a pixel:
    float32 [SIZE_BINS·ASPECT_BINS·ANGLE_BINS, P, P] and P."""
    sb, ab, tb = np.meshgrid(
        np.arange(SIZE_BINS), np.arange(ASPECT_BINS), np.arange(ANGLE_BINS), indexing="ij"
    )
    a, b, theta = (v.reshape(-1, 1, 1).astype(np.float32) for v in _axes(sb, ab, tb, radius_px))
    half = int(np.ceil(a.max() + anti_alias_px)) + 1
    grid = np.arange(-half, half + 1, dtype=np.float32)
    dy, dx = grid[None, :, None], grid[None, None, :]
    u = (dx * np.cos(theta) + dy * np.sin(theta)) / a
    v = (-dx * np.sin(theta) + dy * np.cos(theta)) / b
    d = np.sqrt(u * u + v * v)  # 1 on the boundary
    edge = np.clip((1.0 - d) * np.sqrt(a * b) / anti_alias_px + 0.5, 0.0, 1.0)
    rim = 1.0 + RIM[0] * np.exp(-(((d - RIM[1]) / RIM[2]) ** 2))
    return (edge * rim).astype(np.float32), 2 * half + 1


def stamp_nuclei(
    rng: np.random.Generator,
    shape: tuple[int, int],
    nuclei: Nuclei,
    mpp: float,
    radius_um: float,
    levels_per_unit: float,
) -> np.ndarray:
    """Quantised raw hematoxylin of the nuclei at level 0: uint8 [H, W] (value / levels_per_unit
    is the concentration). Per nucleus intensity ``NUCLEUS_H``; per pixel chromatin speckle."""
    bank, p = _stamp_bank(radius_um / mpp, max(0.5, 0.5 / mpp))
    half = p // 2
    h, w = shape
    width = w + 2 * half
    canvas = np.zeros((h + 2 * half) * width, dtype=np.uint8)
    if nuclei.count == 0:
        return canvas.reshape(h + 2 * half, width)[half : half + h, half : half + w]
    intensity = rng.uniform(*NUCLEUS_H, size=nuclei.count).astype(np.float32)
    row = np.minimum((nuclei.y_um / mpp).astype(np.int64), h - 1)
    col = np.minimum((nuclei.x_um / mpp).astype(np.int64), w - 1)
    origin = row * width + col  # top-left of the P×P patch in the padded canvas
    offsets = (np.arange(p)[:, None] * width + np.arange(p)[None, :]).ravel()
    which = nuclei.bank_index()
    flat_idx, flat_val = [], []
    for s in np.unique(which):
        stamp = bank[s].ravel()
        nz = np.flatnonzero(stamp)
        members = np.flatnonzero(which == s)
        flat_idx.append((origin[members, None] + offsets[nz][None, :]).ravel())
        flat_val.append((intensity[members, None] * stamp[nz][None, :]).ravel())
    idx, val = np.concatenate(flat_idx), np.concatenate(flat_val)
    val *= rng.uniform(*CHROMATIN, size=len(val)).astype(np.float32)
    q = np.minimum(val * levels_per_unit + 0.5, 255).astype(np.uint8)
    np.maximum.at(canvas, idx, q)
    return canvas.reshape(h + 2 * half, width)[half : half + h, half : half + w]


# ----------------------------------------------------------------------------- colour


def colour_lut(stain: Stain, amount: float) -> np.ndarray:
    """RGB for every (quantised hematoxylin, quantised eosin, noise level): uint8 [2**20, 3];
    a pixel is ``lut[(qh << 12) | (qe << 4) | noise]``.

    Beer–Lambert with nuclei displacing stroma: ``c_E = e · (1 − min(h, 1))``.
    """
    h = np.arange(256, dtype=np.float64) * (H_MAX / 255)
    e = np.arange(256, dtype=np.float64) * (E_MAX / 255)
    c_h = (h * stain.hematoxylin * amount)[:, None]
    c_e = (1.0 - np.minimum(h, 1.0))[:, None] * (e * stain.eosin * amount)[None, :]
    od = (
        c_h[..., None] * np.asarray(stain.h)
        + c_e[..., None] * np.asarray(stain.e)
        + np.asarray(OD_BACKGROUND)
    )  # [256, 256, 3]
    noise = NOISE_SD * ndtri((np.arange(NOISE_LEVELS) + 0.5) / NOISE_LEVELS)
    rgb = 255.0 * np.exp(-od)[:, :, None, :] + noise[None, None, :, None]
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8).reshape(-1, 3)


def _layout(
    rng: np.random.Generator, spec: Mapping[str, Any]
) -> tuple[int, np.ndarray, np.ndarray, Nuclei]:
    """Tissue mask and stroma eosin on the ~1 µm grid (``f`` level-0 pixels per cell), and the
    nuclei: the first draws of a slide's generator, shared by rendering and ground truth."""
    h, w, mpp = int(spec["height_px"]), int(spec["width_px"]), float(spec["mpp"])
    f = max(1, int(round(1.0 / mpp)))  # level-0 pixels per side of a ~1 µm cell
    cell_um = f * mpp
    low = (-(-h // f), -(-w // f))
    tissue = tissue_mask(rng, low, cell_um)
    eosin = stroma_eosin(rng, low, cell_um)
    nuclei = place_nuclei(
        rng, tissue, cell_um, float(spec["nuclei_per_mm2"]), float(spec["nuclear_radius_um"])
    )
    return f, tissue, eosin, nuclei


def planted_nuclei(spec: Mapping[str, Any]) -> Nuclei:
    """The nuclei ``render_slide(spec)`` draws (centres in µm from the slide's top-left): the
    ground truth for nuclei counters."""
    return _layout(np.random.default_rng(int(spec["slide_seed"])), spec)[3]


def planted_counts(
    spec: Mapping[str, Any], x_um: np.ndarray, y_um: np.ndarray, size_um: float, min_um2: float
) -> np.ndarray:
    """Planted nuclei per square window (top-left ``x_um, y_um``, side ``size_um``): those
    with at least ``min_um2`` of their ellipse inside it, rasterised on a 1 µm grid (a nucleus
    cut smaller by the window's edge is one a segmentation drops too). int64 [n]."""
    nuclei = planted_nuclei(spec)
    a, b, theta = nuclei.axes_um(float(spec["nuclear_radius_um"]))
    reach = float(a.max()) + 1.0
    n = int(np.ceil(size_um))
    grid = np.arange(n, dtype=np.float64) + 0.5
    xs, ys = np.asarray(x_um, dtype=np.float64), np.asarray(y_um, dtype=np.float64)
    out = np.zeros(len(xs), dtype=np.int64)
    for i, (x0, y0) in enumerate(zip(xs, ys, strict=True)):
        near = np.flatnonzero(
            (nuclei.x_um > x0 - reach)
            & (nuclei.x_um < x0 + size_um + reach)
            & (nuclei.y_um > y0 - reach)
            & (nuclei.y_um < y0 + size_um + reach)
        )
        for k in near:
            dy = (y0 + grid - nuclei.y_um[k])[:, None]
            dx = (x0 + grid - nuclei.x_um[k])[None, :]
            c, s = np.cos(theta[k]), np.sin(theta[k])
            u, v = (dx * c + dy * s) / a[k], (-dx * s + dy * c) / b[k]
            out[i] += int(np.count_nonzero(u * u + v * v <= 1.0) >= min_um2)
    return out


def render_slide(spec: Mapping[str, Any]) -> np.ndarray:
    """Render one row of ``plan_cohort`` as uint8 RGB [H, W, 3]; deterministic in its seed.

    Uses ``slide_seed, width_px, height_px, mpp, nuclei_per_mm2, nuclear_radius_um`` and
    ``stain`` (or ``center``), and optionally ``stain_amount`` (default 1).
    """
    rng = np.random.default_rng(int(spec["slide_seed"]))
    h, w = int(spec["height_px"]), int(spec["width_px"])
    mpp = float(spec["mpp"])
    stain_name = spec.get("stain")
    stain = STAINS[stain_name] if isinstance(stain_name, str) else center_stain(spec["center"])
    amount = float(spec.get("stain_amount", 1.0))
    radius_um = float(spec["nuclear_radius_um"])

    f, tissue, eosin, nuclei = _layout(rng, spec)
    low = tissue.shape
    q_e = np.where(tissue, np.clip(eosin * (255 / E_MAX) + 0.5, 1, 255), 0).astype(np.uint32)
    q_h = stamp_nuclei(rng, (h, w), nuclei, mpp, radius_um, 255 / H_MAX)
    noise = np.frombuffer(rng.bytes(h * w), dtype=np.uint8).reshape(h, w)

    idx = np.empty((low[0], f, low[1], f), dtype=np.uint32)
    idx[...] = (q_e << 4)[:, None, :, None]  # np.repeat by f along both axes, in one pass
    idx = idx.reshape(low[0] * f, low[1] * f)[:h, :w]
    idx |= np.left_shift(q_h, 12, dtype=np.uint32)
    idx |= noise & np.uint8(NOISE_LEVELS - 1)
    lut = colour_lut(stain, amount).view("V3").ravel()  # 3-byte items: one gather per pixel
    return np.take(lut, idx).view(np.uint8).reshape(h, w, 3)


def stain_concentrations(rgb: np.ndarray, stain: Stain) -> np.ndarray:
    """Colour deconvolution with a known stain: float32 [..., 2] of (c_H, c_E), the inverse of
    the Beer–Lambert mix in ``render_slide`` (up to noise, JPEG and the 8-bit range)."""
    od = -np.log(np.maximum(np.asarray(rgb, dtype=np.float32), 1.0) / 255.0)
    od -= np.asarray(OD_BACKGROUND, dtype=np.float32)
    unmix = np.linalg.inv(stain.matrix()).astype(np.float32)
    return (od @ unmix)[..., :2]
