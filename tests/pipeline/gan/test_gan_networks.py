import time

import pytest
import torch

from pipeline.gan import PRESETS, Discriminator, Generator, NetworkSpec
from pipeline.gan.networks import minibatch_stddev, mix_styles


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("name", ["tiny32", "tiny64"])
def test_shapes_and_backward(name: str) -> None:
    spec = PRESETS[name]
    G, D = Generator(spec), Discriminator(spec)
    z = torch.randn(4, spec.z_dim)
    t0 = time.perf_counter()
    img = G(z)
    logits = D(img)
    (logits.sum()).backward()
    assert time.perf_counter() - t0 < 5.0
    r = spec.resolution
    assert img.shape == (4, 3, r, r) and logits.shape == (4,)
    assert all(p.grad is not None for p in G.synthesis.parameters() if p.requires_grad)
    assert G.num_ws == spec.num_ws == 2 * (r.bit_length() - 1) - 2


def test_preset_sizes_and_spec_roundtrip() -> None:
    spec = PRESETS["tiny64"]
    assert 1.0e6 < n_params(Generator(spec)) < 2.0e6
    assert 0.5e6 < n_params(Discriminator(spec)) < 1.5e6
    assert NetworkSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ValueError, match="power of two"):
        NetworkSpec(resolution=48, z_dim=8, w_dim=8, mapping_layers=1, channels={})


def test_truncation_zero_gives_the_average_w() -> None:
    torch.manual_seed(0)
    G = Generator(PRESETS["tiny32"]).eval()
    G.mapping.w_avg.normal_()
    w = G.mapping(torch.randn(3, G.z_dim), truncation_psi=0.0)
    torch.testing.assert_close(w, G.mapping.w_avg.expand(3, -1))
    a = G(torch.randn(2, G.z_dim), truncation_psi=0.0, noise_mode="const")
    torch.testing.assert_close(a[0], a[1])


def test_w_avg_tracks_in_training_only() -> None:
    G = Generator(PRESETS["tiny32"])
    G.train()
    G.mapping(torch.randn(8, G.z_dim))
    assert G.mapping.w_avg.abs().sum() > 0
    before = G.mapping.w_avg.clone()
    G.eval()
    G.mapping(torch.randn(8, G.z_dim))
    torch.testing.assert_close(G.mapping.w_avg, before)


def test_style_mixing_switches_latent_at_a_cutoff() -> None:
    ws = torch.zeros(64, 8, 4)
    w2 = torch.ones(64, 4)
    mixed = mix_styles(ws, w2, prob=1.0)
    per_layer = mixed[:, :, 0]  # [N, num_ws]
    assert (per_layer[:, 0] == 0).all()  # the first layer always keeps the first latent
    assert (per_layer.diff(dim=1) >= 0).all()  # once switched, stays switched
    assert (per_layer[:, -1] == 1).all()
    assert torch.equal(mix_styles(ws, w2, prob=0.0), ws)


def test_minibatch_stddev_channel() -> None:
    x = torch.randn(8, 5, 4, 4)
    y = minibatch_stddev(x, 4)
    assert y.shape == (8, 6, 4, 4)
    same = minibatch_stddev(torch.ones(8, 5, 4, 4), 4)
    assert same[:, -1].abs().max() < 1e-3  # identical samples: no spread
