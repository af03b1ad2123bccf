"""StyleGAN2 (Karras et al. 2020) after stylegan2-ada-pytorch's split: networks, losses,
augmentation, EMA and metrics; the math as small pure functions. No Ray here."""

from pipeline.gan.augment import AugmentPipe, adjust_p
from pipeline.gan.ema import ema_beta, ema_update
from pipeline.gan.layers import EqualConv2d, EqualLinear, modulated_conv2d
from pipeline.gan.losses import (
    d_logistic_loss,
    d_r1_penalty,
    g_nonsaturating_loss,
    g_path_length_penalty,
    g_spread_penalty,
    mixing_ws,
)
from pipeline.gan.metrics import (
    laplacian_pyramid,
    layout_correlation,
    sample_patch_descriptors,
    swd,
)
from pipeline.gan.networks import Discriminator, Generator, MappingNetwork, SynthesisNetwork
from pipeline.gan.presets import PRESETS, NetworkSpec

__all__ = [
    "PRESETS",
    "AugmentPipe",
    "Discriminator",
    "EqualConv2d",
    "EqualLinear",
    "Generator",
    "MappingNetwork",
    "NetworkSpec",
    "SynthesisNetwork",
    "adjust_p",
    "d_logistic_loss",
    "d_r1_penalty",
    "ema_beta",
    "ema_update",
    "g_nonsaturating_loss",
    "g_path_length_penalty",
    "g_spread_penalty",
    "laplacian_pyramid",
    "layout_correlation",
    "mixing_ws",
    "modulated_conv2d",
    "sample_patch_descriptors",
    "swd",
]
