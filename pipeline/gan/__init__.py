"""StyleGAN2 (Karras et al. 2020) after stylegan2-ada-pytorch's split: networks, losses,
augmentation, EMA and metrics; the math as small pure functions."""

from pipeline.gan.augment import AugmentPipe, adjust_p
from pipeline.gan.ema import ema_beta, ema_update
from pipeline.gan.losses import d_logistic_loss, d_r1_penalty, g_nonsaturating_loss
from pipeline.gan.metrics import swd
from pipeline.gan.networks import Discriminator, Generator
from pipeline.gan.presets import PRESETS, NetworkSpec

__all__ = [
    "PRESETS",
    "AugmentPipe",
    "Discriminator",
    "Generator",
    "NetworkSpec",
    "adjust_p",
    "d_logistic_loss",
    "d_r1_penalty",
    "ema_beta",
    "ema_update",
    "g_nonsaturating_loss",
    "swd",
]
