"""Training-time augmentation of the built-in classifier: flips/90° rotations and stain
jitter, on ``[N, C, H, W]`` float tiles in [0, 1], drawn from a seeded generator.

Stain jitter is the HED augmentation of Tellez et al. (2019, "Quantifying the effects of data
augmentation and stain color normalization in convolutional neural networks for
computational pathology"): each tile is unmixed into hematoxylin, eosin and residual
concentrations with the Ruifrok & Johnston matrix (``skimage.color.hed_from_rgb``, the one the
probes and stain features use); each concentration is scaled by U(1 − σ, 1 + σ) and shifted by
U(−σ, σ) · ``SHIFT_OD`` optical density; and, beyond Tellez, each stain's OD vector is turned
by Gaussian noise of SD σ / 2 per component (re-normalised), the way two labs' hematoxylins
differ in hue (the demo's two centers' vectors are 13–15° apart). σ = 0 is the identity.
"""

from __future__ import annotations

import torch
from skimage.color import hed_from_rgb, rgb_from_hed

SHIFT_OD = 0.25  # the concentration shift at σ = 1, in optical density (0.05 OD at σ = 0.2)
_MIN = 1.0 / 255.0  # darkest value: no infinite optical density


def dihedral(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """A random flip/90° rotation per image of ``[N, C, H, W]``."""
    k = torch.randint(0, 8, (x.shape[0],), generator=gen)
    out = x.clone()
    for code in range(8):
        idx = (k == code).nonzero().flatten()
        if len(idx):
            y = torch.rot90(x[idx], code % 4, dims=(2, 3))
            out[idx] = torch.flip(y, dims=(3,)) if code >= 4 else y
    return out


def _uniform(shape: tuple[int, ...], bound: float, gen: torch.Generator) -> torch.Tensor:
    return (torch.rand(shape, generator=gen, dtype=torch.float64) * 2 - 1) * bound


def stain_jitter(x: torch.Tensor, sigma: float, gen: torch.Generator) -> torch.Tensor:
    """RGB tiles ``[N, 3, H, W]`` in [0, 1] with each tile's stains jittered by ``sigma``
    (module docstring); 1-channel tiles and ``sigma`` 0 come back unchanged."""
    if sigma <= 0 or x.shape[1] != 3:
        return x
    n = x.shape[0]
    unmix = torch.as_tensor(hed_from_rgb, dtype=torch.float64)
    mix = torch.as_tensor(rgb_from_hed, dtype=torch.float64).expand(n, 3, 3)
    od = -torch.log(x.double().clamp(min=_MIN))
    conc = torch.einsum("nchw,cs->nshw", od, unmix)
    scale = 1 + _uniform((n, 3, 1, 1), sigma, gen)
    shift = _uniform((n, 3, 1, 1), sigma * SHIFT_OD, gen)
    conc = conc * scale + shift
    turned = mix + torch.randn((n, 3, 3), generator=gen, dtype=torch.float64) * (sigma / 2)
    turned = turned.abs() * mix.norm(dim=2, keepdim=True) / turned.norm(dim=2, keepdim=True)
    out = torch.exp(-torch.einsum("nshw,nsc->nchw", conc, turned))
    return out.clamp(0, 1).to(x.dtype)
