import torch

from pipeline.gan.layers import EqualConv2d, downsample2d, modulated_conv2d, upsample2d


def test_demodulated_conv_keeps_unit_variance() -> None:
    torch.manual_seed(0)
    x = torch.randn(16, 64, 16, 16)
    weight = torch.randn(32, 64, 3, 3)
    styles = torch.rand(16, 64) * 3 + 0.1  # wildly different per-channel scales
    y = modulated_conv2d(x, weight, styles, demodulate=True)
    assert y.shape == (16, 32, 16, 16)
    inner = y[:, :, 1:-1, 1:-1]  # away from zero padding
    assert abs(inner.std().item() - 1.0) < 0.1
    raw = modulated_conv2d(x, weight, styles, demodulate=False)
    assert raw[:, :, 1:-1, 1:-1].std().item() > 5.0


def test_modulation_equals_scaling_the_weight() -> None:
    torch.manual_seed(1)
    x, weight, styles = torch.randn(2, 4, 8, 8), torch.randn(3, 4, 3, 3), torch.rand(2, 4) + 0.5
    y = modulated_conv2d(x, weight, styles, demodulate=False)
    for i in range(2):
        w_i = weight * styles[i][None, :, None, None]
        ref = torch.nn.functional.conv2d(x[i : i + 1], w_i, padding=1)
        torch.testing.assert_close(y[i : i + 1], ref, rtol=1e-4, atol=1e-5)


def test_equalised_conv_output_scale_is_independent_of_fan_in() -> None:
    torch.manual_seed(2)
    for fan_in in (8, 128):
        conv = EqualConv2d(fan_in, 16, 3, activation=False)
        y = conv(torch.randn(8, fan_in, 12, 12))[:, :, 1:-1, 1:-1]
        assert abs(y.std().item() - 1.0) < 0.15


def test_resampling_shapes_and_dc_gain() -> None:
    x = torch.ones(1, 3, 8, 8)
    assert upsample2d(x).shape == (1, 3, 16, 16)
    torch.testing.assert_close(downsample2d(x), torch.ones(1, 3, 4, 4))
