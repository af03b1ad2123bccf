"""Benchmark inversion on the demo generator; prints JSON.

Tiles/s and median SSIM of (a) the encoder alone, (b) encoder + K batched refinement steps,
(c) optimisation from the mean w (the classic projector, batched) for a few step budgets, the
smallest one reaching (b)'s median SSIM being the comparison; batch-size scaling of (b); and
the whole ``invert`` stage with 1 vs 2 CPU actors. Uses the encoder cached by
``stylepath train-encoder`` in the workdir (trained first if missing), real demo tiles and the
workdir's classifier. In-process parts use ``--threads`` torch threads.

    PYTHONPATH=. python bench/inversion.py [--config configs/demo.yaml] [--tiles 32] [--k 2]

(``PYTHONPATH=.``: this checkout's code, also when the venv's editable install is another one.)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch

from pipeline.classifier.contract import tiles_to_tensor
from pipeline.config import config_from_dict, load_config
from pipeline.gan.networks import Discriminator
from pipeline.inversion.encoder import Encoder, EncoderSpec
from pipeline.inversion.losses import DFeatures, ssim
from pipeline.inversion.refine import RefineSettings, refine
from pipeline.io.checkpoints import load_weights
from pipeline.io.inversion_store import InversionStore
from pipeline.io.tile_store import TileStore
from tasks.invert import ensure_encoder, prepare, refine_settings, run_invert


def settings(cfg, steps: int) -> RefineSettings:
    return refine_settings(cfg.inversion.refine, steps)


def measure(
    gen, E, feats, x, s: RefineSettings | None, batch: int, from_mean: bool = False
) -> dict:
    """Invert ``x`` in batches: tiles/s (encoder/mean + refinement + synthesis) and SSIM."""
    t0 = time.perf_counter()
    scores = []
    for a in range(0, len(x), batch):
        xb = x[a : a + batch]
        with torch.no_grad():
            w = gen.w_mean.expand(len(xb), -1).clone() if from_mean else E(xb)
        if s is not None and s.steps:
            w = refine(gen, w, xb, s, feats).w
        with torch.no_grad():
            scores.append(ssim(gen.synthesis(w), xb))
    dt = time.perf_counter() - t0
    sc = torch.cat(scores)
    return {
        "tiles_per_s": round(len(x) / dt, 2),
        "median_ssim": round(float(sc.median()), 4),
        "seconds": round(dt, 2),
    }


def actors_run(cfg, n_per_slide: int, concurrency: int, tmp: Path) -> dict:
    """The whole stage on a fresh workdir sharing tiles, classifier and the cached encoder."""
    wd = tmp / f"actors{concurrency}"
    (wd / "inversion").mkdir(parents=True)
    for name in ("tiles", "classifier"):
        (wd / name).symlink_to((cfg.workdir / name).resolve())
    for f in ("encoder.safetensors", "encoder.json"):
        shutil.copy(cfg.workdir / "inversion" / f, wd / "inversion" / f)
    d = cfg.dump()
    d["workdir"] = str(wd)
    d["inversion"].update(concurrency=concurrency, num_cpus=1)
    d["inversion"]["selection"] = {"mode": "per_slide", "n": n_per_slide}
    s = run_invert(config_from_dict(d), progress=False)
    assert not s.encoder_trained
    return {
        "actors": concurrency,
        "tiles": s.n_inverted,
        "tiles_per_s": round(s.tiles_per_s, 2),
        "median_ssim": round(s.median_ssim, 4),
        "work_seconds": round(s.work_seconds, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/demo.yaml")
    ap.add_argument("--tiles", type=int, default=32, help="tiles for (a)-(c)")
    ap.add_argument("--k", type=int, default=2, help="refinement steps of (b)")
    ap.add_argument("--budgets", default="5,10,20,50,100,200", help="steps tried for (c)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--per-slide", type=int, default=16, help="tiles per slide for 1 vs 2 actors")
    args = ap.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    torch.set_num_threads(args.threads)
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

    store = TileStore(cfg.workdir / "tiles")
    sel = prep.selection.sample(n=args.tiles, random_state=0)
    x = torch.cat(
        [tiles_to_tensor(store.read_tiles(r.slide_id, [r.index])) for r in sel.itertuples()]
    )
    batch = cfg.inversion.batch_size
    out: dict = {
        "machine": f"{os.cpu_count()} CPUs (shared, noisy)",
        "threads": args.threads,
        "tiles": len(x),
        "generator": str(prep.gen_folder),
        "space": cfg.inversion.space,
        "encoder_steps": meta["steps"],
    }
    out["a_encoder_only"] = measure(gen, E, feats, x, None, batch)
    out["b_encoder_refine"] = {
        "k": args.k,
        **measure(gen, E, feats, x, settings(cfg, args.k), batch),
    }
    target = out["b_encoder_refine"]["median_ssim"]
    out["c_from_mean"] = {"budget": None, "tried": []}
    out["c_from_mean"]["tried"].append(
        {"steps": 0, **measure(gen, E, feats, x, None, batch, from_mean=True)}
    )
    for steps in [int(b) for b in args.budgets.split(",")]:
        m = measure(gen, E, feats, x, settings(cfg, steps), batch, from_mean=True)
        out["c_from_mean"]["tried"].append({"steps": steps, **m})
        if m["median_ssim"] >= target:
            out["c_from_mean"]["budget"] = steps
            out["speedup_b_over_c"] = round(
                out["b_encoder_refine"]["tiles_per_s"] / m["tiles_per_s"], 1
            )
            break
    out["batch_scaling_b"] = [
        {"batch": b, **measure(gen, E, feats, x, settings(cfg, args.k), b)} for b in (8, 16, 32)
    ]
    with tempfile.TemporaryDirectory(dir=cfg.workdir) as tmp:
        out["stage_actors"] = [actors_run(cfg, args.per_slide, c, Path(tmp)) for c in (1, 2)]
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
