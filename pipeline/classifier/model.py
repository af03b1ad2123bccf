"""The built-in tile classifier: a small CNN trained from scratch (scriptable)."""

from __future__ import annotations

import torch
from torch import nn


class TileCNN(nn.Module):
    """conv3×3-BN-ReLU blocks (max-pool between), global average pool, linear head.

    Takes normalised float32 ``[N, C, H, W]`` (C = ``in_channels``: 3 RGB, 1 grey; any H, W ≥
    2^(blocks-1)); returns logits ``[N]``
    for ``n_outputs == 1`` (binary: the logit of class 1), else ``[N, n_outputs]``. The last
    block's conv (``features.<last>.conv``) is the GradCAM layer.
    """

    def __init__(
        self,
        channels: list[int] | tuple[int, ...] = (16, 32, 64, 64),
        n_outputs: int = 1,
        dropout: float = 0.1,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        blocks = []
        c_in = in_channels
        for i, c in enumerate(channels):
            block = nn.Sequential()
            if i > 0:
                block.add_module("pool", nn.MaxPool2d(2))
            block.add_module("conv", nn.Conv2d(c_in, c, 3, padding=1, bias=False))
            block.add_module("bn", nn.BatchNorm2d(c))
            block.add_module("act", nn.ReLU(inplace=True))
            blocks.append(block)
            c_in = c
        self.features = nn.Sequential(*blocks)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(c_in, n_outputs)
        self.n_outputs = n_outputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x).mean(dim=(2, 3))
        out = self.head(self.dropout(h))
        if self.n_outputs == 1:
            return out[:, 0]
        return out


def tile_cnn(
    channels: list[int] | None = None, n_outputs: int = 1, in_channels: int = 3
) -> TileCNN:
    """Entry point (``pipeline.classifier.model:tile_cnn``) used by the exported model card."""
    return TileCNN(tuple(channels or (16, 32, 64, 64)), n_outputs, in_channels=in_channels)
