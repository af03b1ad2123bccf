"""Baseline heatmaps: GradCAM (needs the model's insides) and occlusion sensitivity (black box),
plus overlays for people.

GradCAM is implemented here (forward hook on one conv layer, ~20 lines) rather than through
PyPI ``grad-cam``: that package requires torchvision and opencv, and installing it replaces the
pinned CPU ``torch==2.13.0`` with a CUDA torch 2.14 (several GB); see docs/classifier.md.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

Score = Callable[[torch.Tensor], torch.Tensor]  # model input [N, 3, S, S] → score [N]


def find_layer(model: nn.Module, name: str | None = None) -> nn.Module:
    """The named submodule, or the last ``nn.Conv2d`` (ValueError when there is none)."""
    modules = dict(model.named_modules())
    if name is not None:
        if name not in modules:
            raise ValueError(f"no layer {name!r}; layers: {', '.join(list(modules)[1:12])}, …")
        return modules[name]
    convs = [m for m in modules.values() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError("no nn.Conv2d layer for GradCAM; set classifier.predict.gradcam_layer")
    return convs[-1]


def gradcam(score: Score, layer: nn.Module, x: torch.Tensor, grid: int) -> torch.Tensor:
    """GradCAM (Selvaraju et al. 2017) of ``score`` at ``layer`` for inputs ``x``.

    ``relu(Σ_k mean_ij(∂score/∂A_k) · A_k)`` on the layer's activation map, resized (area or
    bilinear) to ``grid × grid`` and divided by each map's maximum: ``[N, grid, grid]`` in
    [0, 1] (all zero when nothing supports the class). The model must be in eval mode (samples
    independent within the batch).
    """
    store: dict[str, torch.Tensor] = {}

    def hook(_m: nn.Module, _inp: tuple, out: torch.Tensor) -> None:
        store["a"] = out

    handle = layer.register_forward_hook(hook)
    try:
        with torch.enable_grad():
            s = score(x)
            act = store["a"]
            (grads,) = torch.autograd.grad(s.sum(), act)
    finally:
        handle.remove()
    weights = grads.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * act).sum(1, keepdim=True)).detach()
    cam = _to_grid(cam, grid)[:, 0]
    peak = cam.flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1)
    return torch.where(peak > 1e-12, cam / peak, torch.zeros_like(cam))


@torch.no_grad()
def occlusion(prob: Score, x: torch.Tensor, patch: int, stride: int, grid: int) -> torch.Tensor:
    """Occlusion sensitivity (Zeiler & Fergus 2014): ``prob(x) − prob(x with a patch × patch
    square replaced by the tile's mean colour)`` averaged over the squares covering each pixel,
    then area-resized to ``[N, grid, grid]``. Positive where the region supports the class.
    Costs one forward pass per square position (about (S/stride)² per tile)."""
    n, _, h, w = x.shape
    patch = min(patch, h, w)
    base = prob(x)
    fill = x.mean(dim=(2, 3), keepdim=True).expand(-1, -1, patch, patch)
    total = torch.zeros(n, 1, h, w)
    count = torch.zeros(1, 1, h, w)
    for y0 in _starts(h, patch, stride):
        for x0 in _starts(w, patch, stride):
            occluded = x.clone()
            occluded[:, :, y0 : y0 + patch, x0 : x0 + patch] = fill
            drop = (base - prob(occluded)).float().cpu()
            total[:, :, y0 : y0 + patch, x0 : x0 + patch] += drop.view(n, 1, 1, 1)
            count[:, :, y0 : y0 + patch, x0 : x0 + patch] += 1
    return _to_grid(total / count.clamp_min(1), grid)[:, 0]


def _starts(size: int, patch: int, stride: int) -> list[int]:
    """Square positions covering ``[0, size)``; the last one flush with the edge."""
    starts = list(range(0, size - patch + 1, stride))
    if starts[-1] != size - patch:
        starts.append(size - patch)
    return starts


def _to_grid(maps: torch.Tensor, grid: int) -> torch.Tensor:
    """``[N, 1, h, w]`` → ``[N, 1, grid, grid]`` (area when shrinking, bilinear otherwise)."""
    if maps.shape[-2:] == (grid, grid):
        return maps.float().cpu()
    if maps.shape[-1] >= grid and maps.shape[-2] >= grid:
        return F.adaptive_avg_pool2d(maps.float(), grid).cpu()
    return F.interpolate(
        maps.float(), size=(grid, grid), mode="bilinear", align_corners=False
    ).cpu()


# Colour maps: anchors on [0, 1], linearly interpolated (no matplotlib needed).
_HOT = np.array([[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], float)
_SIGNED = np.array(
    [[33, 102, 172], [146, 197, 222], [247, 247, 247], [244, 165, 130], [178, 24, 43]], float
)


def colorize(values: np.ndarray, signed: bool = False) -> np.ndarray:
    """``[H, W]`` in [0, 1] (or [−1, 1] when ``signed``) → uint8 RGB ``[H, W, 3]``."""
    anchors = _SIGNED if signed else _HOT
    v = np.clip((values + 1) / 2 if signed else values, 0, 1) * (len(anchors) - 1)
    lo = np.floor(v).astype(int).clip(0, len(anchors) - 2)
    t = (v - lo)[..., None]
    return (anchors[lo] * (1 - t) + anchors[lo + 1] * t).round().astype(np.uint8)


def overlay(
    tile: np.ndarray,
    heat: np.ndarray,
    *,
    signed: bool = False,
    alpha: float = 0.5,
    scale: float | None = None,
) -> np.ndarray:
    """A heatmap ``[g, g]`` blended over its tile (uint8 ``[H, W, 3]``, or grey ``[H, W, 1]``)
    → uint8 ``[H, W, 3]``.

    The map is bilinearly resized to the tile; ``scale`` divides it first (default: 1 for
    GradCAM maps in [0, 1]; the largest absolute value for signed occlusion maps).
    """
    if tile.ndim == 2 or tile.shape[-1] == 1:
        tile = np.repeat(tile.reshape(*tile.shape[:2], 1), 3, axis=-1)
    h, w = tile.shape[:2]
    m = torch.from_numpy(np.asarray(heat, dtype=np.float32))[None, None]
    m = F.interpolate(m, size=(h, w), mode="bilinear", align_corners=False)[0, 0].numpy()
    if scale is None:
        scale = max(float(np.abs(m).max()), 1e-6) if signed else 1.0
    colour = colorize(m / scale, signed=signed).astype(np.float32)
    out = (1 - alpha) * tile.astype(np.float32) + alpha * colour
    return out.round().clip(0, 255).astype(np.uint8)
