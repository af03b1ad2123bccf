"""The training step, loop and data stream without Ray."""

import inspect

import numpy as np
import pytest
import torch

from pipeline.features.soft import tile_statistics
from pipeline.gan import PRESETS
from pipeline.gan.data import TileBatches, dihedral, epoch_plan, make_blocks
from pipeline.gan.loop import (
    RAW_PREFIX,
    LoopConfig,
    TrainingDiverged,
    generate,
    sample_w,
    train,
)
from pipeline.gan.losses import g_spread_penalty
from pipeline.gan.metrics import swd
from pipeline.gan.networks import Generator
from pipeline.gan.step import StepConfig, TrainState, train_step


def batches(n: int = 8, res: int = 32):
    g = torch.Generator().manual_seed(0)
    while True:
        yield torch.rand(n, 3, res, res, generator=g) * 2 - 1


def epoch_order(n: int, seed: int, epoch: int, rank: int, world: int, **kw: int) -> np.ndarray:
    """One worker's tile order for an epoch over ``n`` tiles of one slide."""
    blocks = make_blocks(np.zeros(n, dtype=int), np.arange(n), kw["block_tiles"])
    return epoch_plan(blocks, seed, epoch, rank, world, kw["window_blocks"]).rows


def test_epoch_order_is_disjoint_across_workers_and_reshuffled() -> None:
    a, b = (epoch_order(1001, 0, 0, r, 2, block_tiles=8, window_blocks=4) for r in (0, 1))
    assert len(a) == len(b) >= 490 and not set(a) & set(b)  # equal shares, ≤ 1 block cut
    assert not np.array_equal(a, epoch_order(1001, 0, 1, 0, 2, block_tiles=8, window_blocks=4))
    np.testing.assert_array_equal(a, epoch_order(1001, 0, 0, 0, 2, block_tiles=8, window_blocks=4))
    one = epoch_order(1001, 0, 0, 0, 1, block_tiles=8, window_blocks=4)
    assert sorted(one) == list(range(1001))  # one worker: every tile once per epoch
    # Shuffled within windows: a batch draws from few blocks but not in store order.
    assert not np.array_equal(one[:32], np.sort(one[:32]))
    assert len(np.unique(one[:32] // 8)) <= 4


def test_dihedral_keeps_pixels() -> None:
    x = np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3)
    y = dihedral(x, np.random.default_rng(0))
    assert y.shape == x.shape and sorted(y.ravel()) == sorted(x.ravel())


def test_step_counts_images_and_updates_all_parts() -> None:
    cfg = StepConfig(batch_size=8, r1_interval=2, ada_interval=1)
    s = TrainState.create(PRESETS["tiny32"], cfg)
    g0 = [p.clone() for p in s.G.parameters()]
    e0 = [p.clone() for p in s.G_ema.parameters()]
    m = train_step(s, next(batches()), cfg)
    assert s.cur_nimg == 8 and s.step == 1 and "r1" in m and "ada_rt" in m
    assert any(not torch.equal(a, b) for a, b in zip(g0, s.G.parameters(), strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(e0, s.G_ema.parameters(), strict=True))


def test_activation_checkpointing_trains_exactly_as_without() -> None:
    """Recomputing the fine blocks in the backward pass (random noise replayed, R1 and path
    length through it) gives the same step: losses, weights and G_ema."""
    out = []
    for res in (0, 16):
        cfg = StepConfig(
            batch_size=8, r1_interval=1, pl_weight=2.0, pl_interval=1, checkpoint_res=res
        )
        s = TrainState.create(PRESETS["tiny32"], cfg, seed=3)
        calls, block = [], s.G.synthesis._block
        s.G.synthesis._block = lambda i, *a, _b=block, _c=calls: (_c.append(i), _b(i, *a))[1]
        torch.manual_seed(5)
        data = batches()
        metrics = [train_step(s, next(data), cfg) for _ in range(2)]
        out.append((metrics, s, calls))
    (m0, s0, c0), (m1, s1, c1) = out
    assert len(c1) > len(c0)  # the fine blocks ran again in the backward passes
    for a, b in zip(m0, m1, strict=True):
        for k in ("d_loss", "g_loss", "r1", "pl"):
            assert a[k] == pytest.approx(b[k], rel=1e-4, abs=1e-6), k
    for net in ("G", "D", "G_ema"):
        for a, b in zip(getattr(s0, net).parameters(), getattr(s1, net).parameters(), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert s1.G.synthesis.checkpoint_res == s1.D.checkpoint_res == 16


def test_mixed_precision_replaces_non_finite_gradients() -> None:
    """Without loss scaling an overflowing float16 step can leave inf or NaN in a gradient:
    with ``finite`` they become ±1e5 and 0 before Adam sees them; without, they stay."""
    from pipeline.gan.step import average_grads

    for finite in (False, True):
        layer = torch.nn.Linear(3, 1)
        layer.weight.grad = torch.tensor([[float("nan"), float("inf"), -float("inf")]])
        layer.bias.grad = torch.tensor([0.5])
        average_grads(layer, lambda t: t, finite=finite)  # a sync: the all-reduce path too
        if finite:
            assert layer.weight.grad.tolist() == [[0.0, 1e5, -1e5]]
        else:
            assert not torch.isfinite(layer.weight.grad).any()
        assert layer.bias.grad.tolist() == [0.5]


def test_mixed_precision_stays_finite_and_close_to_float32() -> None:
    """The float16 code path on a CPU (bfloat16 autocast): the blocks from 16 px compute in
    low precision with every layer clamped, with and without activation checkpointing; over
    four steps with R1 and path length every loss and weight stays finite, G's images and D's
    logits come out float32, and the first step's losses are float32's within 5 %."""
    runs = {}
    for fp16, ckpt in ((0, 0), (16, 0), (16, 16)):
        cfg = StepConfig(
            batch_size=8,
            r1_interval=1,
            pl_weight=2.0,
            pl_interval=1,
            fp16_res=fp16,
            checkpoint_res=ckpt,
        )
        s = TrainState.create(PRESETS["tiny32"], cfg, seed=3)
        seen: dict[str, torch.dtype] = {}

        def hook(name: str, _seen: dict = seen):
            return lambda _m, _i, out: _seen.setdefault(name, out.dtype) and None

        s.G.synthesis.convs[-1].register_forward_hook(hook("g32"))
        s.D.blocks[0].register_forward_hook(hook("d32"))
        torch.manual_seed(5)
        data = batches()
        metrics = [train_step(s, next(data), cfg) for _ in range(4)]
        runs[fp16, ckpt] = metrics
        for m in metrics:
            assert all(np.isfinite(v) for v in m.values()), m
        for net in (s.G, s.D, s.G_ema):
            assert all(torch.isfinite(p).all() for p in net.parameters())
        with torch.no_grad():
            img = s.G(torch.randn(2, s.G.z_dim))
            assert img.dtype == s.D(img).dtype == torch.float32
        low = torch.bfloat16 if fp16 else torch.float32
        assert seen == {"g32": low, "d32": low}
        convs = s.G.synthesis.convs
        assert [c.clamp for c in convs] == [
            256.0 if fp16 and c.resolution >= 16 else None for c in convs
        ]
    for key in ((16, 0), (16, 16)):
        for k in ("d_loss", "g_loss", "r1", "pl"):
            assert runs[key][0][k] == pytest.approx(runs[0, 0][0][k], rel=0.05), (key, k)


def test_spread_penalty_makes_w_carry_the_tiles_spread() -> None:
    """``spread_weight`` adds the spread penalty on the lazy G steps: the metric is logged,
    and in a few steps samples that share one noise draw spread their tile statistics
    (colour, nuclear fraction) closer to the reals' than the same run's without it."""
    from pipeline.gan.step import g_reg_interval

    def tiles():  # each tile its own colour and saturation: a per-tile spread for w to carry
        g = torch.Generator().manual_seed(0)
        while True:
            grey = torch.rand(8, 1, 1, 1, generator=g) * 1.2 - 0.6
            hue = torch.rand(8, 3, 1, 1, generator=g) * 2 - 1
            colour = grey + torch.rand(8, 1, 1, 1, generator=g) * (hue - hue.mean(1, True))
            yield (colour + 0.1 * torch.randn(8, 3, 32, 32, generator=g)).clamp(-1, 1)

    stream = tiles()
    reals = torch.cat([next(stream) for _ in range(8)])

    def penalty_after(weight: float) -> tuple[float, dict[str, float]]:
        cfg = StepConfig(batch_size=8, pl_interval=1, spread_weight=weight)
        torch.manual_seed(0)
        s = TrainState.create(PRESETS["tiny32"], cfg, seed=0)
        it = tiles()
        for _ in range(8):
            m = train_step(s, next(it), cfg)
        torch.manual_seed(1)
        with torch.no_grad():
            fake = tile_statistics(s.G(torch.randn(64, s.G.z_dim), noise_mode="shared"))
        return g_spread_penalty(fake, tile_statistics(reals)).item(), m

    assert g_reg_interval(StepConfig(spread_weight=1.0, pl_interval=4)) == 4
    plain, m0 = penalty_after(0.0)
    spread, m1 = penalty_after(1.0)
    assert "spread" not in m0 and m1["spread"] > 0
    assert spread < 0.5 * plain, (spread, plain)  # 0.0093 vs 0.048


def test_spread_penalty_is_taken_at_one_shared_noise_draw() -> None:
    """The penalty's samples share one noise draw, so spread that only the noise makes
    earns nothing: a G blind to w (styles fixed) whose noise varies its samples reads a
    large penalty in the step, and a small one at independent noise."""
    cfg = StepConfig(batch_size=8, pl_interval=1, spread_weight=1.0)
    s = TrainState.create(PRESETS["tiny32"], cfg, seed=0)
    with torch.no_grad():
        for m in s.G.modules():
            if hasattr(m, "affine"):
                m.affine.weight.zero_()  # every style = its bias: w changes nothing
    with torch.no_grad():
        for m in s.G.modules():
            if hasattr(m, "noise_strength"):
                m.noise_strength.fill_(1.0)  # the noise inputs vary the samples
    real = next(batches(n=8))
    torch.manual_seed(0)
    with torch.no_grad():
        fake = tile_statistics(s.G(torch.randn(8, s.G.z_dim), noise_mode="random"))
    at_random_noise = g_spread_penalty(fake, tile_statistics(real)).item()
    m = train_step(s, real, cfg)
    assert m["spread"] > 20 > 2 > at_random_noise, (m["spread"], at_random_noise)  # 76, 0.6
    # (independent noise in the step: 1.1)


def test_guard_rolls_back_then_gives_up() -> None:
    cfg = StepConfig(batch_size=8)
    s = TrainState.create(PRESETS["tiny32"], cfg)
    ticks = []
    loop = LoopConfig(total_nimg=32, tick_nimg=16, guard_d_loss=-1.0, max_rollbacks=2)
    with pytest.raises(TrainingDiverged, match="rollbacks"):
        train(s, batches(), cfg, loop, lambda st, m: ticks.append(m))
    assert ticks == [] and s.cur_nimg == 0  # rolled back to the start every time


def test_collapse_guard_uses_sample_spread() -> None:
    cfg = StepConfig(batch_size=8)
    s = TrainState.create(PRESETS["tiny32"], cfg)
    wild = np.random.default_rng(0).integers(0, 256, (32, 32, 32, 3), dtype=np.uint8)
    loop = LoopConfig(
        total_nimg=16, tick_nimg=16, metric_images=32, guard_diversity=50.0, max_rollbacks=0
    )
    with pytest.raises(TrainingDiverged, match="mode collapse"):
        train(s, batches(), cfg, loop, lambda st, m: None, reals_for_metrics=wild)


def test_raw_g_is_measured_beside_g_ema() -> None:
    """``score_raw_g``: each SWD tick also measures the raw G, from its own samples."""
    cfg = StepConfig(batch_size=8)
    s = TrainState.create(PRESETS["tiny32"], cfg)
    reals = np.random.default_rng(0).integers(0, 256, (32, 32, 32, 3), dtype=np.uint8)
    loop = LoopConfig(
        total_nimg=16,
        tick_nimg=16,
        metric_ticks=1,
        metric_images=32,
        guard_diversity=0.0,
        score_raw_g=True,
    )
    ticks = []

    def stats(x: np.ndarray, latents: tuple[np.ndarray, np.ndarray]) -> dict[str, float]:
        w, flat = latents  # w and its samples at constant noise
        assert len(w) == len(flat) == len(x) and flat.shape == x.shape
        return {"mean_R": float(x[..., 0].mean()), "w_mean": float(w.mean())}

    train(
        s,
        batches(),
        cfg,
        loop,
        lambda st, m: ticks.append(m),
        reals_for_metrics=reals,
        sample_stats=stats,
    )
    (m,) = ticks
    for net, prefix in ((s.G_ema, ""), (s.G, RAW_PREFIX)):
        fakes = generate(net, 32, seed=loop.seed + 1)
        assert m[f"{prefix}swd"] == pytest.approx(swd(reals, fakes, seed=loop.seed)["mean"])
        assert m[f"{prefix}mean_R"] == pytest.approx(float(fakes[..., 0].mean()))
        assert m[f"{prefix}w_mean"] == pytest.approx(float(sample_w(net, 32, loop.seed + 2).mean()))
    assert m["swd"] != m["raw_swd"]  # two generators, not one measured twice


def test_generate_leaves_a_training_g_as_it_was() -> None:
    """Measuring the raw G mid-training must not move its running w_avg or its mode."""
    G = Generator(PRESETS["tiny32"]).train()
    with torch.no_grad():
        G.mapping.w_avg.fill_(0.25)
    generate(G, 8, seed=0)
    assert G.training and torch.equal(G.mapping.w_avg, torch.full_like(G.mapping.w_avg, 0.25))


def test_generate_draws_seeded_per_sample_noise() -> None:
    G = Generator(PRESETS["tiny32"]).eval()
    with torch.no_grad():
        for m in G.synthesis.convs:
            m.noise_strength.fill_(1.0)
    state = torch.get_rng_state()
    a = generate(G, 4, seed=3, batch=2)
    assert torch.equal(torch.get_rng_state(), state)  # the training RNG is not disturbed
    np.testing.assert_array_equal(a, generate(G, 4, seed=3, batch=2))  # deterministic
    assert not np.array_equal(a, generate(G, 4, seed=4, batch=2))
    # Metrics must see G's real distribution: random noise differs per sample, const does not.
    c = generate(G, 4, seed=3, noise_mode="const")
    assert c.std(axis=0).mean() < a.std(axis=0).mean()


def test_default_blocks_mix_slides_within_a_batch() -> None:
    defaults = inspect.signature(TileBatches.__init__).parameters
    bt, wb = defaults["block_tiles"].default, defaults["window_blocks"].default
    slides = np.repeat(np.arange(16), 570)  # the demo cohort: 16 slides of ~570 tiles
    blocks = make_blocks(slides, np.tile(np.arange(570), 16), bt)
    rows = epoch_plan(blocks, seed=0, epoch=0, rank=0, world_size=1, window_blocks=wb).rows
    per_batch = [len(np.unique(slides[rows[i : i + 32]])) for i in range(0, len(rows) - 31, 32)]
    assert np.mean(per_batch) > 12  # iid would give ~14; 64-tile blocks gave ~9


def test_ada_ops_select_the_augmentations() -> None:
    s = TrainState.create(PRESETS["tiny32"], StepConfig(batch_size=8, ada_ops=("xflip",)))
    assert s.augment.w["xflip"] == 1.0 and s.augment.w["hue"] == 0.0
    s.augment.p.fill_(1.0)
    x = torch.rand(16, 3, 8, 8) * 2 - 1
    y = s.augment(x)
    # x-flips only: every image is itself or its mirror, colours untouched.
    assert all(torch.equal(a, b) or torch.equal(a, b.flip(-1)) for a, b in zip(y, x, strict=True))
