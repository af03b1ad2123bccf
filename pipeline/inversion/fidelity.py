"""How faithful a reconstruction is, per tile: MSE, SSIM and the classifier's probability of
the explained class on the real tile and on its reconstruction; and the analysis' fidelity
gate, which also asks that a reconstruction be identifiable: more like its own tile than like
most other tiles (a generator that draws one generic tile for every input reconstructs every
tile about equally well)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from pipeline.classifier.contract import Classifier
from pipeline.inversion.losses import mse, ssim


@torch.no_grad()
def fidelity(
    real: torch.Tensor, recon: torch.Tensor, clf: Classifier | None
) -> dict[str, np.ndarray]:
    """Images [N, 3, R, R] in [0, 1] → float32 arrays ``mse``, ``ssim``, ``prob_real``,
    ``prob_recon`` (NaN probabilities without a classifier)."""
    out = {"mse": mse(recon, real), "ssim": ssim(recon, real)}
    if clf is not None:
        out["prob_real"] = clf.prob(clf(real))
        out["prob_recon"] = clf.prob(clf(recon))
    else:
        out["prob_real"] = out["prob_recon"] = torch.full((len(real),), float("nan"))
    return {k: v.float().cpu().numpy() for k, v in out.items()}


@torch.no_grad()
def reference_ssim(
    recon: torch.Tensor,
    reference: torch.Tensor,
    own_groups: np.ndarray,
    ref_groups: np.ndarray,
    quantile: float,
    chunk: int = 16,
) -> np.ndarray:
    """For each reconstruction [N, C, R, R]: the ``quantile`` of its SSIM to the
    ``reference`` tiles [M, C, R, R] of other groups (slides; a reference tile of the
    reconstruction's own slide is skipped): how alike it is to tiles it is not. NaN when no
    reference tile is of another group."""
    n, m = len(recon), len(reference)
    scores = torch.full((n, m), float("nan"))
    for a in range(0, m, chunk):
        ref = reference[a : a + chunk]
        for j in range(len(ref)):
            scores[:, a + j] = ssim(recon, ref[j : j + 1].expand_as(recon)).float().cpu()
    same = np.asarray(own_groups).astype(str)[:, None] == np.asarray(ref_groups).astype(str)[None]
    scores[torch.from_numpy(same)] = float("nan")
    return np.nanquantile(scores.numpy(), quantile, axis=1) if m else np.full(n, np.nan)


def fidelity_gate(
    table: pd.DataFrame, max_prob_change: float, min_ssim: float, identity: bool
) -> pd.DataFrame:
    """Per tile (``ssim``, ``prob_real``, ``prob_recon``, ``ssim_reference``): ``prob_change``
    = |p_real − p_recon|, ``identified`` (its reconstruction is more like it than the
    reference quantile of other tiles; NaN reference: not testable, counted as identified)
    and ``faithful`` (every test passed) with ``fidelity_reason`` (what failed, or "")."""
    out = table.copy()
    out["prob_change"] = (out["prob_real"] - out["prob_recon"]).abs()
    ref = out["ssim_reference"]
    out["identified"] = ref.isna() | (out["ssim"] > ref)
    tests = {
        f"|Δp| > {max_prob_change:g}": ~(out["prob_change"] <= max_prob_change),
        f"SSIM < {min_ssim:g}": ~(out["ssim"] >= min_ssim),
        "not identifiable": ~out["identified"] if identity else pd.Series(False, out.index),
    }
    failed = pd.DataFrame(tests)
    out["faithful"] = ~failed.any(axis=1)
    out["fidelity_reason"] = failed.apply(lambda r: "; ".join(r.index[r.to_numpy()]), axis=1)
    return out
