"""One-channel (grey, radiology) images through the GAN, the classifier contract, the encoder,
refinement and shifts; RGB stays what it was."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.classifier.contract import ClassifierError, load_classifier, resolve_spec
from pipeline.classifier.model import TileCNN
from pipeline.classifier.train import channel_stats, normalise
from pipeline.config import ClassifierConfig
from pipeline.directions import shift_latents
from pipeline.gan.generator import TrainedGenerator
from pipeline.gan.loop import generate
from pipeline.gan.networks import Discriminator, Generator
from pipeline.gan.presets import PRESETS, preset_spec
from pipeline.gan.step import StepConfig, TrainState, train_step
from pipeline.inversion.encoder import Encoder, EncoderSpec
from pipeline.inversion.fidelity import fidelity
from pipeline.inversion.losses import DFeatures
from pipeline.inversion.refine import RefineSettings, refine
from pipeline.io.models import save_torchscript, write_card

pytestmark = pytest.mark.usefixtures("one_thread")


def test_grey_presets_and_a_training_step() -> None:
    spec = preset_spec("mini32", 1)
    assert spec.img_channels == 1 and PRESETS["mini32"].img_channels == 3  # presets untouched
    assert preset_spec("tiny64").to_dict() == PRESETS["tiny64"].to_dict()
    torch.manual_seed(0)
    G, D = Generator(spec), Discriminator(spec)
    assert G(torch.randn(2, spec.z_dim)).shape == (2, 1, 32, 32)
    n_g, n_d = (sum(p.numel() for p in m.parameters()) for m in (G, D))
    assert n_g == pytest.approx(0.19e6, rel=0.05) and n_d == pytest.approx(0.22e6, rel=0.05)
    cfg = StepConfig(batch_size=4, ada_ops=("xint", "brightness", "contrast", "hue"))
    state = TrainState.create(spec, cfg, seed=0)
    state.augment.p.fill_(1.0)  # hue is skipped for grey images, the rest applies
    m = train_step(state, torch.rand(4, 1, 32, 32) * 2 - 1, cfg)
    assert np.isfinite([m["d_loss"], m["g_loss"]]).all() and state.cur_nimg == 4
    imgs = generate(state.G_ema, 3, seed=1)
    assert imgs.shape == (3, 32, 32, 1) and imgs.dtype == np.uint8
    with pytest.raises(ValueError, match="unknown preset"):
        preset_spec("huge")


def test_grey_classifier_contract(tmp_path) -> None:
    tiles = np.random.default_rng(0).integers(0, 256, (10, 16, 16, 1), dtype=np.uint8)
    mean, std = channel_stats(tiles)
    assert len(mean) == len(std) == 1
    x = normalise(torch.rand(2, 1, 8, 8), torch.tensor(mean), torch.tensor(std))
    assert x.shape == (2, 1, 8, 8)
    model = TileCNN((4, 8), 1, in_channels=1).eval()
    path = tmp_path / "grey.pt"
    save_torchscript(torch.jit.script(model), path)
    write_card(tmp_path / "grey.json", {"channels": 1, "mean": mean, "std": std})
    spec = resolve_spec(ClassifierConfig(model=str(path)), tmp_path, 16, tile_channels=1)
    clf = load_classifier(spec)
    assert spec.channels == 1 and clf(torch.rand(3, 1, 16, 16)).shape == (3,)
    # An RGB model (no card: 3 channels by config) on grey tiles: grey is repeated to RGB.
    rgb = tmp_path / "rgb.pt"
    save_torchscript(torch.jit.script(TileCNN((4, 8), 1).eval()), rgb)
    rgb_spec = resolve_spec(ClassifierConfig(model=str(rgb), channels=3), tmp_path, 16, 1)
    rgb_clf = load_classifier(rgb_spec)
    g = torch.rand(2, 1, 16, 16)
    torch.testing.assert_close(rgb_clf(g), rgb_clf.model(g.expand(-1, 3, -1, -1)))
    # A grey model told it gets RGB tiles, or an RGB model probed as grey: clear errors.
    with pytest.raises(ClassifierError, match="takes 1 channel"):
        resolve_spec(ClassifierConfig(model=str(path)), tmp_path, 16, tile_channels=3)
    with pytest.raises(ClassifierError, match=r"fails on input \[2, 1, 16, 16\]"):
        load_classifier(resolve_spec(ClassifierConfig(model=str(rgb)), tmp_path, 16, 1))
    with pytest.raises(ClassifierError, match="mean has 3 value"):
        resolve_spec(
            ClassifierConfig(model=str(path), mean=[0.5] * 3, std=[1.0] * 3), tmp_path, 16, 1
        )


def test_grey_encoder_refinement_and_shift() -> None:
    torch.manual_seed(0)
    spec = preset_spec("mini32", 1)
    gen = TrainedGenerator(Generator(spec), {}, n_stats=256)
    enc = Encoder(
        EncoderSpec(32, gen.w_dim, gen.num_ws, width=8, channels=1), gen.w_mean, gen.w_std
    )
    assert EncoderSpec(32, 8, 8).to_dict().get("channels") is None  # RGB cache keys unchanged
    with torch.no_grad():
        target = gen.synthesis(gen.mapping(torch.randn(4, gen.z_dim)))
        w0 = enc(target)
    assert target.shape == (4, 1, 32, 32) and w0.shape == (4, gen.w_dim)
    feats = DFeatures(Discriminator(spec))
    out = refine(gen, w0, target, RefineSettings(steps=5), feats, seed=0)
    assert out.img.shape == (4, 1, 32, 32) and (out.history[-1] <= out.history[0]).all()
    fid = fidelity(target, out.img, None)
    assert fid["ssim"].shape == (4,)
    d = np.eye(gen.w_dim, dtype=np.float32)[0]
    shifted = shift_latents(out.w.numpy(), d, np.array([-1.0, 0.0, 1.0]), 0.5)
    with torch.no_grad():
        frames = gen.synthesis(torch.from_numpy(shifted.reshape(-1, gen.w_dim)))
    assert frames.shape == (12, 1, 32, 32)
