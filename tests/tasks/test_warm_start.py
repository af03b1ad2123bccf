"""``gan.init_from`` warm starts: an export of a narrower architecture is widened, one of
another architecture is refused with its folder and the reason (real files on disk)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from pipeline.gan import Discriminator, Generator, NetworkSpec
from pipeline.gan.step import StepConfig, TrainState
from pipeline.io.checkpoints import CheckpointError, save_generator, save_weights
from tasks.train_gan import warm_start

pytestmark = pytest.mark.usefixtures("one_thread")

NARROW = NetworkSpec(
    resolution=16, z_dim=8, w_dim=8, mapping_layers=2, channels={4: 16, 8: 8, 16: 4}
)
WIDE = dataclasses.replace(NARROW, channels={4: 16, 8: 16, 16: 8})


def export(folder: Path, spec: NetworkSpec, seed: int = 0) -> tuple[Generator, Discriminator]:
    torch.manual_seed(seed)
    G, D = Generator(spec).eval(), Discriminator(spec)
    with torch.no_grad():
        for p in [*G.parameters(), *D.parameters()]:
            p.add_(0.2 * torch.randn_like(p))
    save_generator(folder, G.state_dict(), {"spec": spec.to_dict(), "augment_p": 0.25})
    save_weights(folder / "discriminator.safetensors", D.state_dict())
    return G, D


def test_a_narrower_export_is_widened_into_the_preset(tmp_path: Path) -> None:
    G, D = export(tmp_path / "narrow", NARROW)
    state = TrainState.create(WIDE, StepConfig(), seed=1)
    warm_start(state, tmp_path / "narrow", "wide")
    assert float(state.augment.p) == pytest.approx(0.25)
    ws = G.ws_from_z(torch.randn(4, NARROW.z_dim))
    with torch.no_grad():
        img = G.synthesis(ws, noise_mode="const")
        for net in (state.G, state.G_ema):
            got = net.eval().synthesis(ws, noise_mode="const")
            torch.testing.assert_close(got, img, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(state.D(img), D(img), atol=1e-5, rtol=1e-5)


def test_another_architecture_is_refused_by_name(tmp_path: Path) -> None:
    export(tmp_path / "wide", WIDE)
    state = TrainState.create(NARROW, StepConfig(), seed=1)
    before = {k: v.clone() for k, v in state.G.state_dict().items()}
    with pytest.raises(CheckpointError, match=r"wide: .*16 channels at 8 px would shrink to 8"):
        warm_start(state, tmp_path / "wide", "narrow")
    export(tmp_path / "w16", dataclasses.replace(NARROW, w_dim=16))
    with pytest.raises(CheckpointError, match=r"w16: .*w_dim differs \(16 vs 8\)"):
        warm_start(state, tmp_path / "w16", "narrow")
    # a discriminator of another architecture beside a fitting generator
    export(tmp_path / "odd_d", NARROW)
    d_file = tmp_path / "odd_d" / "discriminator.safetensors"
    save_weights(d_file, Discriminator(WIDE).state_dict())
    with pytest.raises(CheckpointError, match=r"odd_d/discriminator.safetensors: does not fit"):
        warm_start(TrainState.create(NARROW, StepConfig(), seed=1), tmp_path / "odd_d", "narrow")
    # nothing was loaded
    for k, v in state.G.state_dict().items():
        torch.testing.assert_close(v, before[k])
