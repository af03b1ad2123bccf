"""Sliced Wasserstein distance on Laplacian-pyramid patches."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pipeline.gan.metrics import laplacian_pyramid, sample_patch_descriptors, swd

pytestmark = pytest.mark.usefixtures("one_thread")


def tiles(seed: int, n: int = 32, size: int = 32) -> torch.Tensor:
    """Smooth random colour fields with fine texture, in [-1, 1]: [N, 3, size, size]."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, size // 8, size // 8, generator=g) * 1.2 - 0.6
    fine = torch.randn(n, 3, size, size, generator=g) * 0.15
    return F.interpolate(coarse, size=size, mode="bilinear", align_corners=False) + fine


def test_identical_sets_give_zero() -> None:
    a = tiles(0)
    out = swd(a, a, seed=1)
    assert set(out) == {"32", "16", "mean"}
    assert max(out.values()) < 1e-6


def test_colour_shift_is_clearly_farther_than_a_fresh_sample() -> None:
    a, b = tiles(0), tiles(1)
    shifted = a.clone()
    shifted[:, 0] += 0.3  # same images, redder
    base = swd(a, b, seed=1)  # sampling noise of two sets from one distribution
    far = swd(a, shifted, seed=1)
    assert far["16"] > 3 * base["16"]  # the coarsest (low-pass) level sees the shift
    assert far["mean"] > 2 * base["mean"]
    assert far["32"] < 0.01 * base["32"]  # band-pass detail is unchanged by a constant shift


def test_deterministic_for_a_seed() -> None:
    a, b = tiles(0), tiles(1)
    assert swd(a, b, seed=3) == swd(a, b, seed=3)
    assert swd(a, b, seed=3) != swd(a, b, seed=4)
    as_uint8 = ((a.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    assert swd(as_uint8, as_uint8, seed=3)["mean"] < 1e-6  # uint8 [N, H, W, C] accepted


def test_laplacian_pyramid_shapes_and_reconstruction() -> None:
    x = tiles(2, n=2)
    levels = laplacian_pyramid(x, 3)
    assert [lv.shape for lv in levels] == [(2, 3, 32, 32), (2, 3, 16, 16), (2, 3, 8, 8)]
    rec = levels[-1]
    for band in reversed(levels[:-1]):
        rec = band + F.interpolate(rec, scale_factor=2, mode="bilinear", align_corners=False)
    torch.testing.assert_close(rec, x)


def test_patch_descriptors_are_the_sampled_patches() -> None:
    x = tiles(3, n=4, size=16)
    desc = sample_patch_descriptors(x, 10, 5, np.random.default_rng(7))
    assert desc.shape == (10, 3 * 5 * 5) and desc.dtype == np.float32
    rng = np.random.default_rng(7)  # replay the draws
    idx, ys, xs = rng.integers(0, 4, 10), rng.integers(0, 12, 10), rng.integers(0, 12, 10)
    for k in range(10):
        ref = x[idx[k], :, ys[k] : ys[k] + 5, xs[k] : xs[k] + 5].reshape(-1).numpy()
        np.testing.assert_array_equal(desc[k], ref)


def test_layout_correlation_separates_shared_from_independent_layouts() -> None:
    from pipeline.gan.metrics import layout_correlation

    rng = np.random.default_rng(0)
    independent = rng.integers(0, 256, (32, 16, 16, 3), dtype=np.uint8)
    assert abs(layout_correlation(independent)) < 0.05
    one = rng.normal(size=(1, 3, 16, 16))
    shared = one * rng.uniform(0.5, 2.0, (32, 1, 1, 1)) + rng.uniform(-0.3, 0.3, (32, 3, 1, 1))
    assert layout_correlation(torch.from_numpy(shared).float()) > 0.99  # same layout, recoloured
    assert layout_correlation(torch.from_numpy(-shared[:2]).float()) > 0.99
