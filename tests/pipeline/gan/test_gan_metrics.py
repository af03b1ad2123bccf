import numpy as np

from pipeline.gan.metrics import laplacian_pyramid, swd, to_float_images


def images(seed: int, n: int = 32, shift: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(60, 200, size=(n, 32, 32, 3))
    base[..., 0] += shift
    return np.clip(base, 0, 255).astype(np.uint8)


def test_swd_zero_for_identical_and_larger_for_shifted() -> None:
    a = images(0)
    same = swd(a, a, seed=1)
    assert same["mean"] < 1e-6 and set(same) == {"32", "16", "mean"}
    other = swd(a, images(1), seed=1)["mean"]
    shifted = swd(a, images(1, shift=60), seed=1)["mean"]
    assert shifted > 3 * other
    assert swd(a, images(1), seed=1) == swd(a, images(1), seed=1)  # deterministic


def test_pyramid_reconstructs() -> None:
    x = to_float_images(images(3, n=2))
    levels = laplacian_pyramid(x, 3)
    assert [lv.shape[-1] for lv in levels] == [32, 16, 8]
