"""GradCAM and occlusion on models whose evidence we know; overlays."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from pipeline.classifier.heatmaps import colorize, find_layer, gradcam, occlusion, overlay


class RedDetector(nn.Module):
    """score = mean over the image of relu(conv1x1(red)): evidence is wherever red is."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1, bias=False)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.weight[0, 0] = 1.0  # channel 0 sees red
            self.conv.weight[1, 1] = 1.0  # channel 1 sees green (unused by the score)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x))[:, 0].mean(dim=(1, 2))


def red_corner(n: int = 2, size: int = 32) -> torch.Tensor:
    x = torch.zeros(n, 3, size, size)
    x[:, 1] = 0.5
    x[0, 0, :16, :16] = 1.0  # tile 0: red top-left quadrant
    x[1, 0, 16:, 16:] = 1.0  # tile 1: red bottom-right quadrant
    return x


def test_gradcam_points_at_the_evidence(one_thread) -> None:
    model = RedDetector().eval()
    assert find_layer(model) is model.conv and find_layer(model, "conv") is model.conv
    with pytest.raises(ValueError, match="no layer 'nope'"):
        find_layer(model, "nope")
    with pytest.raises(ValueError, match="no nn.Conv2d"):
        find_layer(nn.Sequential(nn.Flatten()))
    cam = gradcam(model, model.conv, red_corner(), grid=4)
    assert cam.shape == (2, 4, 4) and cam.dtype == torch.float32
    expected = torch.zeros(2, 4, 4)
    expected[0, :2, :2] = 1.0
    expected[1, 2:, 2:] = 1.0
    torch.testing.assert_close(cam, expected)
    assert gradcam(model, model.conv, torch.zeros(1, 3, 8, 8), grid=2).abs().sum() == 0


def test_occlusion_points_at_the_evidence(one_thread) -> None:
    model = RedDetector().eval()
    x = red_corner()
    occ = occlusion(model, x, patch=16, stride=16, grid=2)
    assert occ.shape == (2, 2, 2)
    # Replacing the red quadrant by the tile's mean colour (red 0.25) drops the score by
    # (1 − 0.25) / 4; elsewhere it raises it by 0.25 / 4.
    expected = torch.full((2, 2, 2), -0.25 / 4)
    expected[0, 0, 0] = expected[1, 1, 1] = 0.75 / 4
    torch.testing.assert_close(occ, expected)
    # Overlapping squares (stride < patch, last square flush with the edge) still cover all.
    fine = occlusion(model, x, patch=12, stride=8, grid=8)
    assert fine.shape == (2, 8, 8) and torch.isfinite(fine).all()
    assert fine[0, :2, :2].mean() > 0 > fine[0, 6:, 6:].mean()


def test_overlay_and_colours() -> None:
    assert colorize(np.array([[0.0, 1.0]])).tolist() == [[[0, 0, 4], [252, 255, 164]]]
    signed = colorize(np.array([[-1.0, 0.0, 1.0]]), signed=True)
    assert signed[0, 1].tolist() == [247, 247, 247] and signed[0, 0, 2] > signed[0, 0, 0]
    tile = np.full((32, 32, 3), 200, np.uint8)
    heat = np.zeros((4, 4), np.float32)
    heat[0, 0] = 1.0
    out = overlay(tile, heat, alpha=0.5)
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8
    assert out[0, 0].tolist() != out[31, 31].tolist()
    assert out[31, 31].tolist() == [100, 100, 102]  # 0.5 · 200 + 0.5 · colour(0)
    blue = overlay(tile, heat * -0.1, signed=True)[0, 0]  # negative: blue
    assert blue[2] > blue[0]
