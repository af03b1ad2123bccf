"""ADA augmentation: identity at p = 0, every op active at p = 1, differentiable, gated per
sample; the p heuristic."""

import pytest
import torch

from pipeline.gan import AugmentPipe, adjust_p

pytestmark = pytest.mark.usefixtures("one_thread")


def images(
    n: int = 8, c: int = 3, size: int = 16, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, c, size, size, generator=g, dtype=dtype) * 2 - 1


def only(op: str, p: float = 1.0) -> AugmentPipe:
    return AugmentPipe(p, **{name: (1 if name == op else 0) for name in AugmentPipe.OPS})


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_identity_at_p0_and_shapes_dtype_at_p1(dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    x = images(dtype=dtype)
    assert torch.equal(AugmentPipe(0.0)(x), x)
    y = AugmentPipe(1.0)(x)
    assert y.shape == x.shape and y.dtype == dtype
    assert ((y - x).abs().amax(dim=(1, 2, 3)) > 1e-3).all()  # every image changed
    grey = AugmentPipe(1.0)(x[:, :1])
    assert grey.shape == (8, 1, 16, 16) and not torch.equal(grey, x[:, :1])


@pytest.mark.parametrize("op", AugmentPipe.OPS)
def test_each_op_changes_images_at_p1(op: str) -> None:
    torch.manual_seed(1)
    x = images(n=16)
    y = only(op)(x)
    assert y.shape == x.shape
    assert not torch.allclose(y, x, atol=1e-3), op


def test_gradient_flows_to_the_input() -> None:
    torch.manual_seed(2)
    x = images().requires_grad_(True)
    AugmentPipe(1.0)(x).square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_probability_is_per_sample() -> None:
    torch.manual_seed(3)
    x = images(n=400, size=4)
    changed = (only("brightness", p=0.5)(x) != x).flatten(1).any(dim=1).float().mean()
    assert 0.4 < changed < 0.6


def test_flips_and_rot90_only_permute_pixels() -> None:
    torch.manual_seed(4)
    x = images(n=16, size=8)
    pipe = AugmentPipe(
        1.0, xint=0, scale=0, rotate=0, brightness=0, contrast=0, hue=0, saturation=0
    )
    y = pipe(x)
    for i in range(16):  # each output is one of the 8 dihedral transforms of its input
        cands = [torch.rot90(v, k, dims=(1, 2)) for v in (x[i], x[i].flip(2)) for k in range(4)]
        assert min((cand - y[i]).abs().max().item() for cand in cands) < 1e-5


def test_translation_is_by_whole_pixels() -> None:
    torch.manual_seed(5)
    x = images(n=8, size=16)
    y = only("xint")(x)
    for i in range(8):  # the interior is the input shifted by an integer (dx, dy), |d| <= 2
        errs = {
            (dx, dy): (y[i, :, 4:12, 4:12] - x[i, :, 4 + dy : 12 + dy, 4 + dx : 12 + dx])
            .abs()
            .max()
            for dx in range(-2, 3)
            for dy in range(-2, 3)
        }
        assert min(errs.values()) < 1e-5


@pytest.mark.parametrize("op", ["hue", "saturation"])
def test_hue_and_saturation_keep_the_grey_level(op: str) -> None:
    torch.manual_seed(6)
    x = images()
    y = only(op)(x)
    assert not torch.allclose(y, x, atol=1e-3)
    torch.testing.assert_close(y.mean(dim=1), x.mean(dim=1), rtol=1e-5, atol=1e-5)


def test_p_is_a_buffer() -> None:
    pipe = AugmentPipe(0.3)
    assert pipe.state_dict()["p"].item() == pytest.approx(0.3)


def test_adjust_p() -> None:
    step = 32 * 4 / (100 * 1000)
    assert adjust_p(0.5, 0.9, batch_size=32, interval=4, speed_kimg=100) == pytest.approx(
        0.5 + step
    )  # D overfits reals: more augmentation
    assert adjust_p(0.5, 0.1, batch_size=32, interval=4, speed_kimg=100) == pytest.approx(
        0.5 - step
    )
    assert adjust_p(0.5, 0.6, batch_size=32, interval=4) == 0.5  # on target
    assert adjust_p(0.0, 0.1, batch_size=32) == 0.0  # clamped
    assert adjust_p(0.999, 0.9, batch_size=32, interval=4, speed_kimg=0.1) == 1.0
