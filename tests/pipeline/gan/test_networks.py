"""G and D built from presets: shapes, speed, truncation, style mixing, wiring, specs."""

import dataclasses
import json
import math
import time

import pytest
import torch

from pipeline.gan import PRESETS, Discriminator, Generator, NetworkSpec
from pipeline.gan.networks import minibatch_stddev

pytestmark = pytest.mark.usefixtures("one_thread")

TINY8 = NetworkSpec(resolution=8, z_dim=8, w_dim=8, mapping_layers=2, channels={4: 8, 8: 4})


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_tiny32_shapes_and_fast_forward_backward() -> None:
    torch.manual_seed(0)
    spec = PRESETS["tiny32"]
    G, D = Generator(spec), Discriminator(spec)
    z = torch.randn(4, spec.z_dim)
    img = G(z)
    logits = D(img)
    assert img.shape == (4, 3, 32, 32) and logits.shape == (4,)
    assert G.num_ws == spec.num_ws == 8
    times = []
    for _ in range(3):  # best of 3: robust to a busy shared machine
        t0 = time.perf_counter()
        D(G(z)).sum().backward()
        times.append(time.perf_counter() - t0)
    assert min(times) < 1.0, times
    assert all(p.grad is not None for p in [*G.parameters(), *D.parameters()])


def test_preset_parameter_counts() -> None:
    counts = {}
    with torch.device("meta"):  # no memory, no init cost
        for name, spec in PRESETS.items():
            counts[name] = (n_params(Generator(spec)), n_params(Discriminator(spec)))
    assert counts["tiny32"][0] == pytest.approx(0.78e6, rel=0.05)
    assert counts["tiny64"][0] == pytest.approx(1.4e6, rel=0.05)
    assert counts["tiny64"][1] == pytest.approx(0.88e6, rel=0.05)
    assert counts["wide64"][0] == pytest.approx(1.77e6, rel=0.05)
    assert counts["paper256"][0] == pytest.approx(24.8e6, rel=0.02)  # stylegan2-ada's paper256
    assert counts["paper256"][1] == pytest.approx(24.0e6, rel=0.02)


def test_truncation_psi_zero_gives_the_w_avg_image() -> None:
    torch.manual_seed(1)
    G = Generator(TINY8).eval()
    G.mapping.w_avg.normal_()
    imgs = G(torch.randn(3, TINY8.z_dim), truncation_psi=0.0, noise_mode="const")
    ws_avg = G.mapping.w_avg.expand(3, G.num_ws, -1)  # [3, num_ws, w_dim]
    torch.testing.assert_close(imgs, G.synthesis(ws_avg, noise_mode="const"))
    half = G(torch.randn(3, TINY8.z_dim), truncation_psi=0.5, noise_mode="const")
    assert not torch.allclose(half[0], half[1])


def test_w_avg_is_tracked_in_training_mode_only() -> None:
    G = Generator(TINY8)
    G.mapping(torch.randn(8, TINY8.z_dim))
    assert G.mapping.w_avg.abs().sum() > 0
    before = G.mapping.w_avg.clone()
    G.eval()
    G.mapping(torch.randn(8, TINY8.z_dim))
    assert torch.equal(G.mapping.w_avg, before)


def test_style_mixing_gives_ws_that_differ_across_layers() -> None:
    torch.manual_seed(2)
    G = Generator(TINY8)
    z = torch.randn(16, TINY8.z_dim)
    plain = G.ws_from_z(z)  # [N, num_ws, w_dim]
    assert torch.equal(plain, plain[:, :1].expand_as(plain))
    mixed = G.ws_from_z(z, style_mixing_prob=1.0)
    assert mixed.shape == (16, G.num_ws, TINY8.w_dim)
    torch.testing.assert_close(mixed[:, 0], plain[:, 0])  # layer 0 always keeps the first w
    assert not torch.allclose(mixed[:, -1], plain[:, -1])  # the last always the second
    assert G(z, style_mixing_prob=0.9).shape == (16, 3, 8, 8)


def test_every_w_reaches_the_image() -> None:
    torch.manual_seed(3)
    G = Generator(TINY8)
    ws = torch.randn(2, G.num_ws, TINY8.w_dim, requires_grad=True)
    G.synthesis(ws, noise_mode="none").sum().backward()
    assert (ws.grad.abs().sum(dim=(0, 2)) > 0).all()  # one w per conv/toRGB, none unused
    with pytest.raises(ValueError, match="ws must be"):
        G.synthesis(ws[:, :-1])


def test_noise_modes() -> None:
    torch.manual_seed(4)
    G = Generator(TINY8).eval()
    for conv in G.synthesis.convs:
        conv.noise_strength.data.fill_(1.0)
    ws = G.ws_from_z(torch.randn(2, TINY8.z_dim))
    assert torch.equal(G.synthesis(ws, "const"), G.synthesis(ws, "const"))
    assert not torch.equal(G.synthesis(ws, "random"), G.synthesis(ws, "random"))
    assert not torch.equal(G.synthesis(ws, "none"), G.synthesis(ws, "const"))


def test_shared_noise_is_one_fresh_draw_for_the_whole_batch() -> None:
    """``noise_mode="shared"`` draws one noise map per layer (and, with a noise-drawn input
    shift, one shift) for the batch: samples of the same w are identical, so only w can make
    them differ; the draw is fresh per call (an input training also sees), not the constant
    buffers, so G cannot tune its output to one fixed input."""
    torch.manual_seed(4)
    spec = dataclasses.replace(TINY8, input_shift=2.0, shift_source="noise")
    G = Generator(spec).eval()
    for conv in G.synthesis.convs:
        conv.noise_strength.data.fill_(1.0)
    one_w = G.ws_from_z(torch.randn(1, spec.z_dim)).expand(4, -1, -1)
    with torch.no_grad():
        a, b = G.synthesis(one_w, "shared"), G.synthesis(one_w, "shared")
        assert (a == a[:1]).all()  # one draw across the batch
        assert not torch.allclose(a, b)  # fresh per call
        assert not torch.allclose(a[:1], G.synthesis(one_w[:1], "const"))
        assert G.synthesis(one_w, "random").std(0).mean() > 0.05  # per-sample draws differ
    plain = Generator(TINY8).eval()  # no input shift: the noise maps alone are drawn afresh
    plain.load_state_dict(G.state_dict())
    with torch.no_grad():
        p1, p2 = plain.synthesis(one_w, "shared"), plain.synthesis(one_w, "shared")
        assert (p1 == p1[:1]).all() and not torch.allclose(p1, p2)
        assert not torch.allclose(p1, plain.synthesis(one_w, "const"))
    shift = G.synthesis.input_shift(one_w, "shared")
    assert (shift == shift[:1]).all() and not torch.equal(
        shift, G.synthesis.input_shift(one_w, "shared")
    )
    torch.manual_seed(0)
    draws = torch.cat([G.synthesis.input_shift(one_w[:1], "shared") for _ in range(2000)])
    assert 1.8 < float(draws.std()) < 2.2  # drawn like training's shift, N(0, input_shift²)
    with pytest.raises(ValueError, match="shared"):
        G.synthesis(one_w, "fixed")


def test_fused_modulation_generator_matches() -> None:
    torch.manual_seed(5)
    G = Generator(TINY8).eval()
    Gf = Generator(TINY8, fused_modconv=True).eval()
    Gf.load_state_dict(G.state_dict())
    z = torch.randn(2, TINY8.z_dim)
    torch.testing.assert_close(Gf(z, noise_mode="const"), G(z, noise_mode="const"))


def test_minibatch_stddev_groups_samples_n_and_n_plus_m() -> None:
    torch.manual_seed(6)
    x = torch.randn(4, 5, 4, 4)
    y = minibatch_stddev(x, 2)  # groups {0, 2} and {1, 3}
    assert y.shape == (4, 6, 4, 4)
    x2 = x.clone()
    x2[1] += torch.randn(5, 4, 4)
    y2 = minibatch_stddev(x2, 2)
    assert torch.equal(y2[[0, 2], -1], y[[0, 2], -1])  # other group untouched
    assert not torch.equal(y2[3, -1], y[3, -1])  # same group sees it
    assert minibatch_stddev(torch.ones(4, 5, 4, 4), 4)[:, -1].max() < 1e-3


def test_discriminator_output_and_group_size() -> None:
    torch.manual_seed(7)
    D = Discriminator(TINY8)
    assert D(torch.randn(6, 3, 8, 8)).shape == (6,)  # 6 is not a multiple of 4: group shrinks


def test_spec_json_roundtrip_and_validation() -> None:
    for spec in PRESETS.values():
        back = NetworkSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
        assert back == spec and hash(back) == hash(spec)
    assert PRESETS["tiny64"].channels == {4: 128, 8: 128, 16: 64, 32: 32, 64: 16}
    assert [PRESETS["paper256"].channels[r] for r in (32, 64, 128, 256)] == [512, 256, 128, 64]
    with pytest.raises(ValueError, match="power of two"):
        NetworkSpec(resolution=48, z_dim=8, w_dim=8, mapping_layers=1, channels={})
    with pytest.raises(ValueError, match="missing"):
        NetworkSpec(resolution=16, z_dim=8, w_dim=8, mapping_layers=1, channels={4: 8, 8: 8})
    G = Generator(TINY8)
    G2 = Generator(NetworkSpec.from_dict(TINY8.to_dict()))
    G2.load_state_dict(G.state_dict())  # same architecture from the saved spec
    assert "input_shift" not in TINY8.to_dict()  # the paper's input: older specs unchanged
    shifted = dataclasses.replace(TINY8, input_shift=1.5)
    assert NetworkSpec.from_dict(json.loads(json.dumps(shifted.to_dict()))) == shifted
    Generator(shifted).load_state_dict(G.state_dict())  # the shift adds no weights
    with pytest.raises(ValueError, match="input_shift"):
        dataclasses.replace(TINY8, input_shift=-1.0)
    assert (
        "shift_source" not in shifted.to_dict()
    )  # "w": exports from before shift_source unchanged
    by_noise = dataclasses.replace(shifted, shift_source="noise")
    assert NetworkSpec.from_dict(json.loads(json.dumps(by_noise.to_dict()))) == by_noise
    with pytest.raises(ValueError, match="shift_source"):
        dataclasses.replace(shifted, shift_source="phase")


def test_input_shift_moves_the_layout_with_w() -> None:
    """A fresh G draws its constant's arrangement in every sample; with ``input_shift`` the
    constant moves by a fixed projection of w, so the samples no longer share it."""
    from pipeline.gan.loop import generate
    from pipeline.gan.metrics import layout_correlation

    spec = PRESETS["tiny32"]
    torch.manual_seed(0)  # the init was the module's RNG state: order-dependent (seeds 0-7 hold)
    G = Generator(spec).eval()
    H = Generator(dataclasses.replace(spec, input_shift=2.0)).eval()
    H.load_state_dict(G.state_dict())
    ws = G.ws_from_z(torch.randn(4, spec.z_dim))
    torch.testing.assert_close(
        H.synthesis.input_shift(ws), 2.0 * ws[:, 0] @ H.synthesis.shift_proj.T
    )
    assert (G.synthesis.input_shift(ws) == 0).all()
    fixed = layout_correlation(generate(G, 64, seed=1, noise_mode="const"))
    moving = layout_correlation(generate(H, 64, seed=1, noise_mode="const"))
    assert moving < 0.5 * fixed


def test_input_shift_from_noise_is_stochastic_detail() -> None:
    """With ``shift_source="noise"`` the constant's shift is drawn per sample like the noise
    inputs (SD ``input_shift`` cells), independent of w: the samples of one w differ and do
    not share a layout; at constant noise it is one fixed typical draw (``CONST_SHIFT``, radius
    1.18 SD: zero, which training hardly visits, drew overexposed images), so a sample is a
    function of w alone (as the analysis and the inversion draw them); without noise, zero."""
    from pipeline.gan.loop import generate
    from pipeline.gan.metrics import layout_correlation

    spec = PRESETS["tiny32"]
    G = Generator(spec).eval()
    H = Generator(dataclasses.replace(spec, input_shift=2.0, shift_source="noise")).eval()
    H.load_state_dict(G.state_dict())
    ws = G.ws_from_z(torch.randn(2048, spec.z_dim))
    const = H.synthesis.input_shift(ws, "const")
    assert (const == const[:1]).all() and torch.equal(const, H.synthesis.input_shift(ws, "const"))
    assert float(const[0].norm()) == pytest.approx(2.0 * math.sqrt(2 * math.log(2)))
    assert (H.synthesis.input_shift(ws, "none") == 0).all()
    torch.manual_seed(0)
    shift = H.synthesis.input_shift(ws)
    assert 1.8 < float(shift.std()) < 2.2 and abs(float(shift.mean())) < 0.15
    # independent of w: a sample's shift does not follow its w
    assert not torch.equal(shift, H.synthesis.input_shift(ws))
    with torch.no_grad():
        torch.testing.assert_close(  # no noise: G itself, nothing moved
            H.synthesis(ws[:4], noise_mode="none"), G.synthesis(ws[:4], noise_mode="none")
        )
        # constant noise: G with its constant moved by the fixed shift, the same for every call
        moved = H.synthesis(ws[:4], noise_mode="const")
        assert not torch.allclose(moved, G.synthesis(ws[:4], noise_mode="const"))
        torch.testing.assert_close(moved, H.synthesis(ws[:4], noise_mode="const"))
        one_w = ws[:1].expand(8, -1, -1)
        assert H.synthesis(one_w).std(0).mean() > 0.05  # one w, eight arrangements
    fixed = layout_correlation(generate(G, 64, seed=1))
    moving = layout_correlation(generate(H, 64, seed=1))
    assert moving < 0.5 * fixed
