import torch

from pipeline.gan import AugmentPipe, adjust_p


def test_identity_at_p0_and_changes_at_p1() -> None:
    torch.manual_seed(0)
    x = torch.rand(8, 3, 16, 16) * 2 - 1
    assert torch.equal(AugmentPipe(0.0)(x), x)
    y = AugmentPipe(1.0)(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert (y - x).abs().mean() > 0.1
    grey = AugmentPipe(1.0)(x[:, :1])
    assert grey.shape == (8, 1, 16, 16)


def test_augment_is_differentiable() -> None:
    x = (torch.rand(4, 3, 16, 16) * 2 - 1).requires_grad_(True)
    AugmentPipe(0.8)(x).square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_only_flips_and_rot90_keep_pixel_values() -> None:
    x = torch.rand(16, 3, 8, 8)
    pipe = AugmentPipe(1.0, xint=0, scale=0, rotate=0, brightness=0, contrast=0, hue=0,
                       saturation=0)  # fmt: skip
    y = pipe(x)
    for i in range(16):  # each output is one of the 8 dihedral transforms of its input
        cands = [torch.rot90(v, k, dims=(1, 2)) for v in (x[i], x[i].flip(2)) for k in range(4)]
        assert min((c - y[i]).abs().max().item() for c in cands) < 1e-4


def test_adjust_p() -> None:
    assert adjust_p(0.0, 0.9, batch_size=32, interval=4, speed_kimg=100) > 0
    assert adjust_p(0.0, 0.1, batch_size=32, interval=4, speed_kimg=100) == 0.0
    assert adjust_p(0.999, 0.9, batch_size=32, interval=4, speed_kimg=0.1) == 1.0
