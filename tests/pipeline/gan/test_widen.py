"""Widening a trained G and D keeps what they compute, and the added channels can learn."""

import dataclasses

import pytest
import torch

from pipeline.gan import Discriminator, Generator, NetworkSpec
from pipeline.gan.widen import widen_state_dict, widening_problem

pytestmark = pytest.mark.usefixtures("one_thread")

NARROW = NetworkSpec(
    resolution=16, z_dim=8, w_dim=8, mapping_layers=2, channels={4: 16, 8: 8, 16: 4}
)
WIDE = dataclasses.replace(NARROW, channels={4: 16, 8: 16, 16: 12})


def trained_like(module: torch.nn.Module) -> torch.nn.Module:
    """Perturb every parameter, as training would (biases, noise strengths, affines)."""
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return module


def test_widened_generator_and_discriminator_compute_the_same() -> None:
    torch.manual_seed(0)
    G, D = trained_like(Generator(NARROW)), trained_like(Discriminator(NARROW))
    G2 = Generator(WIDE)
    G2.load_state_dict(widen_state_dict(G.state_dict(), G2.state_dict()))
    D2 = Discriminator(WIDE)
    D2.load_state_dict(widen_state_dict(D.state_dict(), D2.state_dict()))
    z = torch.randn(6, NARROW.z_dim)
    G.eval(), G2.eval()
    with torch.no_grad():
        ws = G.ws_from_z(z)
        torch.testing.assert_close(G2.ws_from_z(z), ws)
        img = G.synthesis(ws, noise_mode="const")
        torch.testing.assert_close(G2.synthesis(ws, noise_mode="const"), img, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(D2(img), D(img), atol=1e-5, rtol=1e-5)
        # without the √(in_new/in_old) factor the un-demodulated layers (toRGB, D) would differ
        fresh = Generator(WIDE)
        assert not torch.allclose(fresh.synthesis(ws, noise_mode="const"), img, atol=1e-2)


def test_the_added_channels_learn() -> None:
    """The zero blocks get gradients at once; the added units' own weights from the next
    step on, when the zero blocks below them have moved (as with any zero-initialised
    output layer)."""
    torch.manual_seed(1)
    G = trained_like(Generator(NARROW))
    G2 = Generator(WIDE)
    G2.load_state_dict(widen_state_dict(G.state_dict(), G2.state_dict()))
    D2 = Discriminator(WIDE)
    opt = torch.optim.SGD(G2.parameters(), lr=0.1)
    conv, rgb = G2.synthesis.convs[-1], G2.synthesis.torgbs[-1]  # 16 px: 4 → 12 channels
    grads = []
    for _ in range(2):
        opt.zero_grad()
        D2(G2(torch.randn(4, NARROW.z_dim))).sum().backward()
        grads.append((conv.weight.grad.clone(), rgb.weight.grad.clone()))
        opt.step()
    (conv0, rgb0), (conv1, _) = grads
    assert conv0[:4, 4:].abs().sum() > 0  # trained outputs' weights on the added inputs
    assert rgb0[:, 4:].abs().sum() > 0  # toRGB's weights on the added channels
    assert conv0[4:].abs().sum() == 0  # the added outputs reach nothing yet
    assert conv1[4:].abs().sum() > 0  # ... until toRGB's added weights have moved


def test_only_widening_is_allowed() -> None:
    assert widening_problem(NARROW, WIDE) is None
    assert widening_problem(NARROW, NARROW) is None
    assert "shrink" in widening_problem(WIDE, NARROW)
    wider4 = dataclasses.replace(WIDE, channels={4: 32, 8: 16, 16: 12})
    assert "at 4 px" in widening_problem(NARROW, wider4)
    assert "w_dim" in widening_problem(NARROW, dataclasses.replace(WIDE, w_dim=16))
    other_res = dataclasses.replace(NARROW, resolution=8, channels={4: 16, 8: 8})
    assert widening_problem(NARROW, other_res) is not None
    with pytest.raises(ValueError, match="cannot widen"):
        widen_state_dict(Generator(WIDE).state_dict(), Generator(NARROW).state_dict())
