import torch

from pipeline.gan import PRESETS, Discriminator, d_logistic_loss, d_r1_penalty, ema_update
from pipeline.gan.ema import ema_beta
from pipeline.gan.losses import g_nonsaturating_loss, g_path_length_penalty


def test_r1_matches_a_per_sample_autograd_reference() -> None:
    torch.manual_seed(0)
    D = Discriminator(PRESETS["tiny32"]).double()
    D.mbstd_group = 1  # per-sample D so the per-sample gradients are independent
    x = torch.randn(3, 3, 32, 32, dtype=torch.float64, requires_grad=True)
    penalty = d_r1_penalty(x, D(x))
    ref = []
    for i in range(3):
        jac = torch.autograd.functional.jacobian(lambda xi: D(xi[None])[0], x[i].detach())
        ref.append(jac.square().sum())
    torch.testing.assert_close(penalty, torch.stack(ref).mean(), rtol=1e-5, atol=1e-8)


def test_logistic_losses() -> None:
    real, fake = torch.tensor([10.0, 10.0]), torch.tensor([-10.0, -10.0])
    assert d_logistic_loss(real, fake) < 1e-3  # D is right: no loss
    assert g_nonsaturating_loss(fake) > 9.0  # G is caught: large loss
    assert torch.isclose(
        d_logistic_loss(torch.zeros(2), torch.zeros(2)), torch.tensor(2 * 0.6931), atol=1e-4
    )


def test_path_length_penalty_updates_running_mean() -> None:
    ws = torch.randn(4, 2, 8, requires_grad=True)
    img = ws.sum(dim=(1, 2))[:, None, None, None] * torch.ones(4, 3, 8, 8)
    pen, mean, lengths = g_path_length_penalty(img, ws, torch.tensor(0.0), decay=0.5)
    assert lengths.shape == (4,) and mean > 0 and pen >= 0


def test_ema_update() -> None:
    a, b = torch.nn.BatchNorm1d(3), torch.nn.BatchNorm1d(3)
    with torch.no_grad():
        a.weight.fill_(0.0)
        b.weight.fill_(2.0)
        b.running_mean.fill_(5.0)
    ema_update(a, b, beta=0.5)
    torch.testing.assert_close(a.weight, torch.ones(3))
    torch.testing.assert_close(a.running_mean, torch.full((3,), 5.0))  # buffers copied
    ema_update(a, b, beta=1.0)
    torch.testing.assert_close(a.weight, torch.ones(3))
    ema_update(a, b, beta=0.0)
    torch.testing.assert_close(a.weight, b.weight)
    assert 0 < ema_beta(32, cur_nimg=10**6) < 1
    assert ema_beta(32, cur_nimg=1000) < ema_beta(32, cur_nimg=10**6)  # ramp-up
