"""Layers: modulated conv + demodulation, equalised lr, noise, resampling."""

import pytest
import torch
import torch.nn.functional as F

from pipeline.gan.layers import (
    EqualConv2d,
    EqualLinear,
    downsample2d,
    inject_noise,
    modulated_conv2d,
    shift_periodic,
    upsample2d,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_demodulation_gives_unit_output_variance_for_random_styles() -> None:
    torch.manual_seed(0)
    x = torch.randn(8, 64, 12, 12)  # [N, I, H, W], unit variance
    weight = torch.randn(32, 64, 3, 3)  # [O, I, 3, 3]
    styles = torch.randn(8, 64) * 3  # [N, I], random per sample and channel
    inner = (slice(None), slice(None), slice(1, -1), slice(1, -1))  # away from zero padding
    y = modulated_conv2d(x, weight, styles, demodulate=True)
    assert y.shape == (8, 32, 12, 12)
    assert abs(y[inner].var().item() - 1.0) < 0.1
    per_channel = y[inner].var(dim=(0, 2, 3))  # [O]: every output channel, not just on average
    assert (per_channel - 1).abs().max() < 0.25
    raw = modulated_conv2d(x, weight, styles, demodulate=False)
    assert abs(raw[inner].var().item() - 1.0) > 0.5


def test_modulated_conv_matches_an_explicit_per_sample_reference() -> None:
    torch.manual_seed(1)
    x, weight, styles = torch.randn(3, 4, 6, 6), torch.randn(5, 4, 3, 3), torch.randn(3, 4)
    y = modulated_conv2d(x, weight, styles, demodulate=True)
    for i in range(3):
        w_i = weight * styles[i][None, :, None, None]  # modulate input channels
        w_i = w_i / w_i.square().sum(dim=(1, 2, 3), keepdim=True).sqrt()  # demodulate
        ref = F.conv2d(x[i : i + 1], w_i, padding=1)
        torch.testing.assert_close(y[i : i + 1], ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("demodulate", [True, False])
def test_fused_and_non_fused_modulation_agree(demodulate: bool) -> None:
    torch.manual_seed(2)
    x, weight, styles = torch.randn(3, 4, 6, 6), torch.randn(5, 4, 3, 3), torch.randn(3, 4)
    a = modulated_conv2d(x, weight, styles, demodulate, fused=False)
    b = modulated_conv2d(x, weight, styles, demodulate, fused=True)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_equalised_layers_have_unit_gain_whatever_the_fan_in() -> None:
    torch.manual_seed(3)
    for fan_in in (8, 256):
        conv = EqualConv2d(fan_in, 16, 3, activation=False)
        y = conv(torch.randn(8, fan_in, 10, 10))[:, :, 1:-1, 1:-1]
        assert abs(y.std().item() - 1.0) < 0.15
        for lr_mult in (1.0, 0.01):  # the mapping's lr multiplier keeps the forward scale
            fc = EqualLinear(fan_in, 64, lr_mult=lr_mult)
            assert abs(fc(torch.randn(256, fan_in)).std().item() - 1.0) < 0.15
            assert fc.weight.std().item() == pytest.approx(1 / lr_mult, rel=0.1)  # raw param


def test_noise_injection() -> None:
    torch.manual_seed(4)
    x = torch.randn(2, 3, 4, 4)
    assert torch.equal(inject_noise(x, torch.tensor(0.0)), x)
    noise = torch.randn(4, 4)
    torch.testing.assert_close(inject_noise(x, torch.tensor(0.5), noise), x + 0.5 * noise)
    d = inject_noise(x, torch.tensor(1.0)) - x  # fresh noise: one map shared by all channels
    torch.testing.assert_close(d[:, 0], d[:, 2])
    assert not torch.allclose(d[0], d[1])


def test_upsampling_is_zero_insertion_plus_the_1331_filter() -> None:
    torch.manual_seed(5)
    x = torch.randn(2, 3, 6, 6)
    up = upsample2d(x)
    assert up.shape == (2, 3, 12, 12)
    z = torch.zeros(2, 3, 12, 12)
    z[:, :, ::2, ::2] = x
    k = torch.tensor([1.0, 3.0, 3.0, 1.0])
    k = (k[:, None] * k[None, :] / 16).expand(3, 1, 4, 4)  # gain 4 makes up for the zeros
    ref = F.conv2d(F.pad(z, (2, 1, 2, 1)), k, groups=3)
    torch.testing.assert_close(up[:, :, 2:-2, 2:-2], ref[:, :, 2:-2, 2:-2])  # away from edges


def test_downsampling_shape_and_dc_gain() -> None:
    x = torch.ones(1, 3, 8, 8)
    torch.testing.assert_close(downsample2d(x), torch.ones(1, 3, 4, 4))
    assert downsample2d(torch.randn(2, 5, 16, 16)).shape == (2, 5, 8, 8)


def test_periodic_shift_rolls_and_composes() -> None:
    """Integer shifts are ``torch.roll``; fractional ones compose, keep the mean and wrap."""
    torch.manual_seed(0)
    x = torch.randn(3, 5, 4, 4)
    rolled = shift_periodic(x, torch.tensor([[1.0, 2.0], [0.0, -1.0], [4.0, 4.0]]))
    torch.testing.assert_close(rolled[0], torch.roll(x[0], (1, 2), dims=(-2, -1)))
    torch.testing.assert_close(rolled[1], torch.roll(x[1], (0, -1), dims=(-2, -1)))
    torch.testing.assert_close(rolled[2], x[2])  # a whole period
    half = torch.full((3, 2), 0.5)
    once = shift_periodic(x, half)
    assert not torch.allclose(once, x, atol=0.1)  # a half-cell shift moves the map
    torch.testing.assert_close(once.mean(dim=(-2, -1)), x.mean(dim=(-2, -1)))
    odd = torch.randn(2, 3, 5, 5)  # no Nyquist term: fractional shifts compose exactly
    a, b = torch.tensor([[0.3, -0.7]] * 2), torch.tensor([[0.45, 1.2]] * 2)
    torch.testing.assert_close(
        shift_periodic(shift_periodic(odd, a), b), shift_periodic(odd, a + b), atol=1e-5, rtol=0
    )
    x.requires_grad_(True)
    shift = half.clone().requires_grad_(True)
    shift_periodic(x, shift).square().sum().backward()  # differentiable in both
    assert x.grad is not None and shift.grad is not None
