"""Inversion methods side by side on the same real tiles; prints JSON (the last line).

For each method: median SSIM, PSNR and |p_real − p_recon| of the reconstructions, tiles/s
(encoder + refinement, ``--threads`` torch threads), the median SSIM between reconstructions
of different tiles beside the same figure for the tiles themselves (a generator that draws
one generic tile for every input scores high here), and *editability*: the median logit slope
along the classifier's direction (fitted on samples as the analysis fits it) on the
reconstructions ÷ the same on random samples (the analysis' ``editability`` gate). The
methods: the encoder alone (W), the encoder + refinement in W with the demo config's settings,
longer refinements in W and in W+ (the W encoder's w on every layer, then one w per layer).
Uses the encoder cached by ``stylepath train-encoder`` in the workdir (trained first if
missing), the workdir's tiles and classifier.

    PYTHONPATH=. python bench/inversion.py [--config configs/demo.yaml] [--tiles 64]

(``PYTHONPATH=.``: this checkout's code, also when the venv's editable install is another one.)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time

import numpy as np
import pandas as pd
import torch

from pipeline.classifier.contract import load_classifier, tiles_to_tensor
from pipeline.config import load_config
from pipeline.directions import classifier_directions, latent_sigma
from pipeline.gan.networks import Discriminator
from pipeline.inversion.encoder import Encoder, EncoderSpec
from pipeline.inversion.losses import DFeatures, mse, ssim
from pipeline.inversion.refine import RefineSettings, refine
from pipeline.io.checkpoints import load_weights
from pipeline.io.inversion_store import InversionStore
from pipeline.io.tile_store import TileStore
from pipeline.reports.verdicts import editability
from tasks.analyze import shifted_sample_logits
from tasks.invert import ensure_encoder, prepare, refine_settings


def pairwise_ssim(img: torch.Tensor, k: int = 7) -> float:
    """Median SSIM of each image to ``k`` others of the batch."""
    n = len(img)
    scores = [
        ssim(img[(i + 1 + torch.arange(k)) % n], img[i : i + 1].expand(k, -1, -1, -1))
        for i in range(n)
    ]
    return float(torch.cat(scores).median())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/demo.yaml")
    ap.add_argument("--tiles", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--samples", type=int, default=2000, help="samples for the direction fit")
    args = ap.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = load_config(args.config)
    prep = prepare(cfg)
    weights, meta, _ = ensure_encoder(prep, InversionStore(cfg.workdir / "inversion"))
    gen = prep.gen
    E = Encoder(EncoderSpec.from_dict(meta["spec"]), gen.w_mean, gen.w_std)
    E.load_state_dict(weights)
    E.eval().requires_grad_(False)
    D = Discriminator(gen.spec)
    D.load_state_dict(load_weights(prep.gen_folder / "discriminator.safetensors"))
    feats = DFeatures(D)
    clf = load_classifier(prep.clf_spec).eval().requires_grad_(False)

    store = TileStore(cfg.workdir / "tiles")
    sel = prep.selection.sample(n=args.tiles, random_state=0)
    x = torch.cat(
        [tiles_to_tensor(store.read_tiles(r.slide_id, [r.index])) for r in sel.itertuples()]
    )
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        ws = gen.mapping(torch.randn(args.samples, gen.z_dim, generator=g))
        logits = torch.cat([clf.score(clf(gen.synthesis(b))) for b in ws.split(256)]).numpy()
    wn = ws.numpy()
    (direction,), _ = classifier_directions(wn, logits, list(clf.class_names), clf.explained_class)
    d = direction.vector.astype(np.float32)
    sigma = latent_sigma(wn, d)
    alphas = [float(a) for a in cfg.analysis.alphas]

    def shifted(w: np.ndarray) -> pd.DataFrame:
        """``w`` shifted along the direction and scored, as the analysis does it."""
        return shifted_sample_logits(gen, clf, w, (0, "classifier", d, sigma), alphas, "cpu")

    demo = refine_settings(cfg.inversion.refine)
    plain = dataclasses.replace(demo, stats_weight=0.0, noise=0.0)
    methods = {
        "w_encoder": ("W", None),
        f"w_refine_{demo.steps}_config": ("W", demo),
        "w_refine_50": ("W", dataclasses.replace(plain, steps=50)),
        "w_plus_100": ("W+", dataclasses.replace(plain, steps=100, lr=0.1)),
        "w_plus_200": ("W+", dataclasses.replace(plain, steps=200)),
    }
    samples_df = shifted(wn[:64])
    with torch.no_grad():
        p_real = clf.prob(clf(x))
    out: dict = {
        "machine": f"{os.cpu_count()} CPUs (shared, noisy)",
        "threads": args.threads,
        "tiles": len(x),
        "generator": str(prep.gen_folder),
        "direction_auc": round(direction.metrics["auc"], 4),
        "pairwise_ssim_tiles": round(pairwise_ssim(x), 4),
        "methods": {},
    }
    for name, (space, s) in methods.items():
        out["methods"][name] = run_method(gen, E, feats, clf, x, p_real, space, s)
        w = out["methods"][name].pop("_w")
        ed = editability(shifted(w), samples_df, "classifier")
        out["methods"][name]["editability"] = round(ed, 3)
        print(name, out["methods"][name], flush=True)
    print(json.dumps(out))


def run_method(gen, E, feats, clf, x, p_real, space: str, s: RefineSettings | None) -> dict:
    """Invert ``x`` in one batch with the encoder and (``s``) a refinement in ``space``."""
    t0 = time.perf_counter()
    with torch.no_grad():
        w = E(x)
    if space == "W+":
        w = w[:, None].expand(-1, gen.num_ws, -1).clone()
    if s is not None:
        w = refine(gen, w, x, s, feats).w
    dt = time.perf_counter() - t0
    with torch.no_grad():
        recon = gen.synthesis(w)
        p_recon = clf.prob(clf(recon))
    return {
        "space": space,
        "steps": 0 if s is None else s.steps,
        "median_ssim": round(float(ssim(recon, x).median()), 4),
        "median_psnr": round(float((-10 * torch.log10(mse(recon, x))).median()), 2),
        "median_abs_dp": round(float((p_real - p_recon).abs().median()), 4),
        "tiles_per_s": round(len(x) / dt, 2),
        "pairwise_ssim_recon": round(pairwise_ssim(recon), 4),
        "_w": w.numpy(),
    }


if __name__ == "__main__":
    main()
