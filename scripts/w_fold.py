"""Diagnose a generator whose analysis features are not linear in w (docs/results.md, 2026-11-29:
"the fold is a bend").

For each exported generator folder, on samples drawn at constant noise as the analysis draws
them (prints one block per generator):

1. ``linearity``: the median cross-validated ridge R² from w to the 14 histology features
   (the bar's ``w_linearity``), over all samples and over the tissue-full ones (tissue
   fraction >= 0.97: is the fold the hole/no-hole mixture?);
2. ``paths``: features along straight paths in W between two sampled w: the share of their
   variance a straight line and a quadratic in the path position explain (rough, or smooth
   and bent?);
3. ``truncation``: the median R² at ψ 0.7 and 0.5 (is W linear closer to its mean?);
4. ``steps``: steps of ε = 0.5 SD of w along random directions (as the curvature penalty
   measured in docs/results.md drew them): the RMS first difference (how strongly a view
   follows w) and the mean squared second over first difference (relative curvature) of the
   image pooled to 16 px and of the soft nuclear mask pooled to 8 px and to the whole tile (a
   generator can look straight because its nuclei no longer follow w: docs/results.md,
   2026-11-29).

    PYTHONPATH=. .venv/bin/python scripts/w_fold.py models/demo_tiny64 [work/other_export ...]
    (``--parts steps`` for the quick part alone)
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.features import compute_features, feature_names, unwrap_circular
from pipeline.features.soft import soft_nuclei_mask
from pipeline.gan.generator import TrainedGenerator, load_generator
from pipeline.gan.loop import sample_w, sample_z
from pipeline.gan.quality import latent_linearity

PATH_FEATURES = [
    "nuclei_density",
    "nuclear_area_mean",
    "eosin_mean",
    "brightness",
    "tissue_fraction",
    "sharpness",
]


def images(gen: TrainedGenerator, w: torch.Tensor) -> np.ndarray:
    """uint8 [N, H, W, C] of w [N, w_dim] at constant noise (the loading API's synthesis)."""
    with torch.no_grad():
        return (gen.synthesis(w) * 255).round().byte().permute(0, 2, 3, 1).numpy()


def features(img: np.ndarray, mpp: float, names: list[str]):
    return unwrap_circular(compute_features(img, mpp, names, modality="histology"), "histology")


def median_r2(w: np.ndarray, table) -> float:
    return float(np.nanmedian(list(latent_linearity(w, table).values())))


def path_fits(
    gen: TrainedGenerator, n_paths: int, steps: int, mpp: float, seed: int
) -> dict[str, tuple]:
    """Median share of variance along straight W paths explained by degree-1 and -2 fits."""
    t = np.linspace(0, 1, steps)
    w = sample_w(gen.G.eval(), 2 * n_paths, seed)
    shares: dict[str, list[tuple[float, float]]] = {f: [] for f in PATH_FEATURES}
    for p in range(n_paths):
        a, b = w[2 * p], w[2 * p + 1]
        table = features(
            images(gen, torch.from_numpy(a + t[:, None] * (b - a)).float()), mpp, PATH_FEATURES
        )
        for f in PATH_FEATURES:
            y = table[f].to_numpy(float)
            if not np.isfinite(y).all() or y.std() == 0:
                continue
            ss = ((y - y.mean()) ** 2).sum()
            fit = [1 - ((y - np.polyval(np.polyfit(t, y, d), t)) ** 2).sum() / ss for d in (1, 2)]
            shares[f].append((fit[0], fit[1]))
    return {f: tuple(np.median(np.array(v), axis=0).round(2)) for f, v in shares.items() if v}


def step_response(
    gen: TrainedGenerator, n: int, seed: int, eps: float = 0.5
) -> dict[str, tuple[float, float]]:
    """Per view: (RMS first difference, mean squared second / first difference) of steps of
    ``eps`` SD of w along random directions, at constant noise."""
    G = gen.G.eval()
    w = torch.from_numpy(sample_w(G, n, seed)).float()
    v = torch.randn(w.shape, generator=torch.Generator().manual_seed(seed)) * w.std(0) * eps
    with torch.no_grad():
        lo, mid, hi = (
            G.synthesis(x[:, None].expand(-1, G.num_ws, -1), noise_mode="const")
            for x in (w - v, w, w + v)
        )
    views = {
        "image @16": lambda x: F.adaptive_avg_pool2d(x, 16),
        "nuclear mask @8": lambda x: F.adaptive_avg_pool2d(soft_nuclei_mask(x), 8),
        "nuclear mask, whole tile": lambda x: soft_nuclei_mask(x).mean(dim=(1, 2, 3)),
    }
    out = {}
    for name, view in views.items():
        a, b, c = view(lo), view(mid), view(hi)
        first, second = ((c - a) / 2).square().mean(), (a + c - 2 * b).square().mean()
        out[name] = (first.sqrt().item(), (second / first).item())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("generators", nargs="+")
    ap.add_argument("--n", type=int, default=768, help="samples for the R² checks")
    ap.add_argument("--paths", type=int, default=20)
    ap.add_argument("--steps", type=int, default=17)
    ap.add_argument("--mpp", type=float, default=1.0, help="µm per pixel of the tiles")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument(
        "--parts",
        default="linearity,paths,steps",
        help="comma-separated: linearity (with truncation), paths, steps",
    )
    args = ap.parse_args()
    parts = set(args.parts.split(","))
    names = feature_names("histology")
    for folder in args.generators:
        gen = load_generator(folder)
        G = gen.G.eval()
        z = sample_z(G, args.n, args.seed)
        print(folder)
        for psi in (1.0, 0.7, 0.5) if "linearity" in parts else ():
            with torch.no_grad():
                w = G.mapping(z, truncation_psi=psi)
            table = features(images(gen, w), args.mpp, names)
            line = f"  psi {psi}: median R² {median_r2(w.numpy(), table):.2f}"
            if psi == 1.0:
                full = (table["tissue_fraction"] >= 0.97).to_numpy()
                r2 = median_r2(w.numpy()[full], table[full])
                line += f"; tissue-full samples ({full.sum()} of {len(full)}) {r2:.2f}"
            print(line)
        if "paths" in parts:
            fits = path_fits(gen, args.paths, args.steps, args.mpp, args.seed + 1)
            print(
                "  along W paths (line, quadratic): "
                + ", ".join(f"{f} {a:.2f} {b:.2f}" for f, (a, b) in fits.items())
            )
        if "steps" in parts:
            print(
                "  steps of 0.5 SD (RMS first difference, relative curvature): "
                + ", ".join(
                    f"{k} {a:.4f} {b:.2f}"
                    for k, (a, b) in step_response(gen, 128, args.seed).items()
                )
            )


if __name__ == "__main__":
    main()
