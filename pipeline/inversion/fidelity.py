"""How faithful a reconstruction is, per tile: MSE, SSIM and the classifier's probability of
the explained class on the real tile and on its reconstruction."""

from __future__ import annotations

import numpy as np
import torch

from pipeline.classifier.contract import Classifier
from pipeline.inversion.losses import mse, ssim


@torch.no_grad()
def fidelity(real: torch.Tensor, recon: torch.Tensor, clf: Classifier | None
             ) -> dict[str, np.ndarray]:  # fmt: skip
    """Images [N, 3, R, R] in [0, 1] → float32 arrays ``mse``, ``ssim``, ``prob_real``,
    ``prob_recon`` (NaN probabilities without a classifier)."""
    out = {"mse": mse(recon, real), "ssim": ssim(recon, real)}
    if clf is not None:
        out["prob_real"] = clf.prob(clf(real))
        out["prob_recon"] = clf.prob(clf(recon))
    else:
        out["prob_real"] = out["prob_recon"] = torch.full((len(real),), float("nan"))
    return {k: v.float().cpu().numpy() for k, v in out.items()}
