"""Inversion math on a tiny random generator: SSIM, the encoder, batched refinement."""

from __future__ import annotations

import pytest
import torch

from pipeline.gan.generator import TrainedGenerator
from pipeline.gan.networks import Discriminator, Generator
from pipeline.gan.presets import PRESETS
from pipeline.inversion.encoder import Encoder, EncoderSpec
from pipeline.inversion.fidelity import fidelity
from pipeline.inversion.losses import (
    DFeatures,
    as_displayed,
    ms_ssim_loss,
    mse,
    soft_opening,
    ssim,
    statistics_loss,
)
from pipeline.inversion.refine import RefineSettings, lr_at, refine, tile_loss
from pipeline.inversion.train_encoder import EncoderLoss, encoder_step, train_encoder


@pytest.fixture(scope="module")
def gen() -> TrainedGenerator:
    torch.manual_seed(0)
    return TrainedGenerator(Generator(PRESETS["tiny32"]), {}, n_stats=512)


def test_ssim_is_one_for_identical_tiles_and_per_tile(one_thread) -> None:
    torch.manual_seed(1)
    x = torch.rand(4, 3, 32, 32)
    torch.testing.assert_close(ssim(x, x), torch.ones(4))
    y = x.clone()
    y[2] = torch.rand(3, 32, 32)  # only tile 2 differs
    s = ssim(x, y)
    assert s[2] < 0.2 and torch.allclose(s[[0, 1, 3]], torch.ones(3))
    torch.testing.assert_close(s[2:3], ssim(x[2:3], y[2:3]))
    assert (ms_ssim_loss(x, x) < 1e-6).all() and ms_ssim_loss(x, y).shape == (4,)
    assert mse(x, y)[2] > 0 and mse(x, y)[0] == 0
    small = torch.rand(2, 3, 8, 8)  # window shrinks to the image
    torch.testing.assert_close(ssim(small, small), torch.ones(2))


def test_encoder_starts_at_the_mean_and_learns(gen: TrainedGenerator, one_thread) -> None:
    for plus in (False, True):
        spec = EncoderSpec(32, gen.w_dim, gen.num_ws, plus=plus, width=8)
        E = Encoder(spec, gen.w_mean, gen.w_std)
        w = E(torch.rand(2, 3, 32, 32))
        want = (2, gen.num_ws, gen.w_dim) if plus else (2, gen.w_dim)
        assert w.shape == want
        torch.testing.assert_close(w, gen.w_mean.expand(want))
    E = Encoder(EncoderSpec(32, gen.w_dim, gen.num_ws, width=8), gen.w_mean, gen.w_std)
    hist = train_encoder(gen, E, steps=20, batch=8, lr=2e-3, loss=EncoderLoss(ssim=0.2))
    lat = torch.tensor([h["latent"] for h in hist])
    assert torch.isfinite(lat).all() and len(hist) == 20
    assert lat[-5:].mean() < lat[:5].mean()


def test_encoder_training_is_reproducible_from_its_seed(gen: TrainedGenerator, one_thread) -> None:
    """Same seed → the same initial weights and the same trained encoder, whatever the global
    RNG did before (a rerun of the invert stage reproduces its latents)."""
    spec = EncoderSpec(32, gen.w_dim, gen.num_ws, width=8)

    def trained(global_seed: int) -> dict[str, torch.Tensor]:
        torch.manual_seed(global_seed)
        E = Encoder(spec, gen.w_mean, gen.w_std, seed=3)
        train_encoder(gen, E, steps=3, batch=4, lr=2e-3, seed=3)
        return E.state_dict()

    state = torch.get_rng_state()
    Encoder(spec, gen.w_mean, gen.w_std, seed=3)
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is left alone
    a, b = trained(0), trained(1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    init = [Encoder(spec, gen.w_mean, gen.w_std, seed=s).state_dict() for s in (3, 3, 4)]
    assert torch.equal(init[0]["features.0.weight"], init[1]["features.0.weight"])
    assert not torch.equal(init[0]["features.0.weight"], init[2]["features.0.weight"])


@pytest.mark.parametrize("space", ["W", "W+"])
def test_refinement_lowers_every_tiles_loss(gen: TrainedGenerator, space, one_thread) -> None:
    torch.manual_seed(2)
    with torch.no_grad():
        target = gen.synthesis(gen.mapping(torch.randn(6, gen.z_dim)))
    w0 = gen.w_mean.expand(6, -1).clone()
    if space == "W+":
        w0 = w0[:, None].repeat(1, gen.num_ws, 1)
    D = Discriminator(PRESETS["tiny32"])
    s = RefineSettings(steps=12, lr=0.1, noise=0.02)
    res = refine(gen, w0, target, s, DFeatures(D))
    assert res.w.shape == w0.shape and res.history.shape == (13, 6)
    assert (res.history[-1] < res.history[0]).all(), res.history[[0, -1]]
    assert res.failed == [None] * 6
    with torch.no_grad():
        torch.testing.assert_close(res.img, gen.synthesis(res.w))


def test_a_nan_tile_fails_alone(gen: TrainedGenerator, one_thread) -> None:
    torch.manual_seed(3)
    with torch.no_grad():
        target = gen.synthesis(gen.mapping(torch.randn(3, gen.z_dim)))
    target[1, 0, 0, 0] = float("nan")
    w0 = gen.w_mean.expand(3, -1).clone()
    res = refine(gen, w0, target, RefineSettings(steps=10, lr=0.1, feature_weight=0))
    assert res.failed[1] and "non-finite" in res.failed[1] and res.failed[0] is res.failed[2]
    assert torch.isfinite(res.w).all() and torch.equal(res.w[1], w0[1])
    assert torch.isnan(res.loss[1]) and (res.loss[[0, 2]] < res.history[0, [0, 2]]).all()


def test_lr_schedule_and_fidelity_without_classifier() -> None:
    s = RefineSettings(steps=2)
    assert lr_at(0, 2, s) == pytest.approx(s.lr) and lr_at(1, 2, s) == pytest.approx(s.lr)
    long = [lr_at(i, 100, s) for i in range(100)]
    assert long[0] < long[10] == pytest.approx(s.lr) and long[-1] < 0.01 * s.lr
    x = torch.rand(2, 3, 16, 16)
    f = fidelity(x, x, None)
    assert f["mse"].tolist() == [0, 0] and f["ssim"] == pytest.approx([1, 1], abs=1e-5)


def test_the_loss_sees_the_image_as_shown_and_still_pulls_it_back() -> None:
    """An overexposed raw pixel costs only as far as it is wrong once clamped, and a wrong
    one still gets the gradient that pulls it back (the clamp alone would give it none)."""
    raw = torch.tensor([[3.0, 3.0, -0.5, 0.4]], requires_grad=True)
    target = torch.tensor([[1.0, 0.2, 0.0, 0.4]])
    loss = mse(as_displayed(raw), target)
    torch.testing.assert_close(loss, torch.tensor([(0.8**2) / 4]))  # white is right, 3 → 1
    loss.sum().backward()
    assert raw.grad[0, 1] > 0  # too bright as shown: pushed down
    assert raw.grad[0, 0] == 0 and raw.grad[0, 2] == 0 and raw.grad[0, 3] == 0


def test_refinement_scores_the_image_as_shown() -> None:
    """A reconstruction that shows the white tile exactly (raw values past white) costs nothing;
    scored raw, it would cost (3 - 1)² per pixel and be pulled to another image."""
    target = torch.ones(2, 3, 16, 16)
    raw = torch.full_like(target, 3.0)
    s = RefineSettings(ssim_scales=1)
    loss = tile_loss(None, torch.zeros(2, 8), target, s, None, None, img=raw)  # type: ignore[arg-type]
    torch.testing.assert_close(loss, torch.zeros(2))


def test_encoder_step_scores_the_image_as_shown(gen: TrainedGenerator, one_thread) -> None:
    """The encoder's pixel and MS-SSIM terms compare the reconstruction as shown: an encoder
    that already returns the w of a tile whose raw synthesis runs past white and black (61 %
    of this untrained G's values) pays nothing, where the raw image would cost it."""
    E = Encoder(EncoderSpec(32, gen.w_dim, gen.num_ws, width=8), gen.w_mean, gen.w_std)
    w = gen.w_mean.expand(2, -1)  # what E returns at initialisation
    with torch.no_grad():
        raw = gen.synthesis(w, clamp=False)
    assert ((raw < 0) | (raw > 1)).float().mean() > 0.3
    opt = torch.optim.Adam(E.parameters(), lr=0.0)
    out = encoder_step(gen, E, opt, raw.clamp(0, 1), w, EncoderLoss(pixel=1.0, ssim=1.0))
    assert out["latent"] == pytest.approx(0.0, abs=1e-10)
    assert out["pixel"] == pytest.approx(0.0, abs=1e-10)
    assert out["ssim_loss"] == pytest.approx(0.0, abs=1e-5)


def test_statistics_loss_keeps_how_much_nucleus_not_where() -> None:
    """Two tiles with the same dark purple nucleus at different places cost almost nothing;
    the nucleus drawn nowhere (the pink background alone: what pixel losses drift to when
    they cannot place it) costs far more, although its pixel MSE is lower."""
    pink = torch.tensor([0.93, 0.72, 0.85])[:, None, None].expand(3, 32, 32)
    purple = torch.tensor([0.25, 0.15, 0.45])[:, None, None]
    yy, xx = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")

    def tile(cy: int, cx: int) -> torch.Tensor:
        disc = ((yy - cy) ** 2 + (xx - cx) ** 2 <= 25).float()
        return pink * (1 - disc) + purple * disc

    a, moved, empty = tile(8, 8), tile(22, 20), pink.clone()
    x = torch.stack([a, a, a])
    y = torch.stack([a, moved, empty])
    stats = statistics_loss(x, y)
    assert stats[0] == 0 and stats[1] < 1e-3 and stats[2] > 10 * stats[1] + 1e-3, stats
    assert mse(x, y)[2] < mse(x, y)[1]  # pixels prefer no nucleus to one in the wrong place
    grey = statistics_loss(x[:, :1], y[:, :1])  # one channel: its mean
    torch.testing.assert_close(grey, (x[:, 0].mean((1, 2)) - y[:, 0].mean((1, 2))) ** 2)


def test_refinement_with_the_statistics_term_keeps_them_closer(
    gen: TrainedGenerator, one_thread
) -> None:
    torch.manual_seed(5)
    with torch.no_grad():
        target = gen.synthesis(gen.mapping(torch.randn(6, gen.z_dim)))
    w0 = gen.w_mean.expand(6, -1).clone()
    off = refine(gen, w0, target, RefineSettings(steps=15, lr=0.1, feature_weight=0), seed=1)
    on = refine(
        gen,
        w0,
        target,
        RefineSettings(steps=15, lr=0.1, feature_weight=0, stats_weight=100.0),
        seed=1,
    )
    assert statistics_loss(on.img, target).mean() < 0.5 * statistics_loss(off.img, target).mean()


def test_statistics_loss_tells_many_small_nuclei_from_a_few_large() -> None:
    """Same nuclear area, same colour: 16 nuclei 3 px wide against 1 nucleus 12 px wide. The
    nuclear fraction alone cannot tell them apart; its share in nuclei ≥ 7 px wide can."""
    pink = torch.tensor([0.93, 0.72, 0.85])[:, None, None]
    purple = torch.tensor([0.25, 0.15, 0.45])[:, None, None]
    small = torch.zeros(32, 32)
    for i in range(4):
        for j in range(4):
            small[4 + 7 * i : 7 + 7 * i, 4 + 7 * j : 7 + 7 * j] = 1  # 16 × 9 px
    large = torch.zeros(32, 32)
    large[10:22, 10:22] = 1  # 144 px
    assert small.sum() == large.sum()
    a, b = (pink * (1 - m) + purple * m for m in (small, large))
    opened = soft_opening(small[None, None], 7), soft_opening(large[None, None], 7)
    assert opened[0].sum() == 0 and opened[1].sum() == large.sum()
    assert statistics_loss(a[None], b[None], open_px=7) > 0.01
    assert statistics_loss(a[None], b[None], open_px=1) < 1e-6  # without the size statistic
