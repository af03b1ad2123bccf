"""Run by test_multinode_faults.py in its own process: on a 3-node local Ray cluster (a head
with no CPUs, two 1-CPU workers) tile a small cohort and invert its tiles twice with a tiny
random generator — once cleanly, once killing a worker node (and the inversion actor on it)
as soon as the first batch is committed; print both outcomes as JSON."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # this checkout's code, not the
# installed one (`python script.py` puts only the script's folder on sys.path)


def main(root: Path) -> None:
    import ray
    from node_killer import NodeKiller  # beside this script (on sys.path as its folder)
    from ray.cluster_utils import Cluster

    from pipeline.config import RayConfig, config_from_dict
    from pipeline.gan.presets import PRESETS
    from pipeline.gan.step import StepConfig, TrainState
    from pipeline.io.checkpoints import save_generator, save_weights
    from pipeline.io.inversion_store import InversionStore
    from tasks.invert import run_invert
    from tasks.make_cohort import make_cohort
    from tasks.tile import run_tiling

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
    cluster.wait_for_nodes()
    ray_cfg = {"address": cluster.address}
    table = make_cohort(
        root / "cohort", n_slides=3, seed=6, size_um=320, ray_cfg=RayConfig(**ray_cfg)
    )
    tiled = config_from_dict(
        {
            "cohort": str(table),
            "workdir": str(root / "tiled"),
            "ray": ray_cfg,
            "tiling": {"mpp": 1.0, "size": 32, "min_tissue": 0.5},
        }
    )
    run_tiling(tiled)
    state = TrainState.create(PRESETS["tiny32"], StepConfig(), seed=0)
    gen = root / "gen"
    save_weights(gen / "discriminator.safetensors", state.D.state_dict())
    save_generator(gen, state.G_ema.state_dict(), {"spec": PRESETS["tiny32"].to_dict()})
    model = root / "mean_red.pt"
    torch.jit.save(torch.jit.script(MeanRed()), str(model))

    def config(name: str):  # noqa: ANN202
        workdir = root / name
        workdir.mkdir()
        (workdir / "tiles").symlink_to(tiled.workdir / "tiles")
        return config_from_dict(
            {
                "cohort": str(table),
                "workdir": str(workdir),
                "ray": ray_cfg,
                "classifier": {"model": str(model), "class_names": ["other", "red"]},
                "inversion": {
                    "generator": str(gen),
                    "batch_size": 8,
                    "concurrency": 2,
                    "num_cpus": 1,
                    "selection": {"mode": "per_slide", "n": 24},
                    "refine": {"steps": 4},
                    "encoder": {"steps": 3, "batch": 4, "width": 8, "num_cpus": 1},
                    "task_timeout_s": 120,
                },
            }
        )

    clean_cfg = config("clean")
    clean = run_invert(clean_cfg)
    faulty_cfg = config("faulty")
    (faulty_cfg.workdir / "inversion").mkdir()
    for f in ("encoder.safetensors", "encoder.json"):  # the same encoder, not trained twice
        shutil.copy(clean_cfg.workdir / "inversion" / f, faulty_cfg.workdir / "inversion" / f)
    parts = faulty_cfg.workdir / "inversion" / "parts"
    with NodeKiller(cluster, workers[1], parts) as killer:
        t0 = time.perf_counter()
        faulty = run_invert(faulty_cfg)
        faulty_seconds = time.perf_counter() - t0
    alive = sum(n["Alive"] for n in ray.nodes())
    ray.shutdown()
    cluster.shutdown()

    a = InversionStore(faulty_cfg.workdir / "inversion")
    b = InversionStore(clean_cfg.workdir / "inversion")
    ta, tb = a.read_table(), b.read_table()
    la, lb = a.read_latents(), b.read_latents()
    n_batches = -(-ta.groupby("slide_id").size() // 8).sum()
    print(
        json.dumps(
            {
                "killed_after_parts": killer.after_parts,
                "n_batches": int(n_batches),
                "alive_nodes_after": alive,
                "pool": faulty.extras.get("pool"),
                "faulty_seconds": round(faulty_seconds, 1),
                "clean_seconds": round(clean.seconds, 1),
                "n_selected": [faulty.n_selected, clean.n_selected],
                "n_rows": [len(ta), len(tb)],
                "status_ok": [int((ta["status"] == "ok").sum()), int((tb["status"] == "ok").sum())],
                "duplicated_ids": int(ta["tile_id"].duplicated().sum()),
                "same_ids": ta["tile_id"].tolist() == tb["tile_id"].tolist(),
                "same_parts": sorted(a.part_names()) == sorted(b.part_names()),
                "max_latent_diff": float(np.abs(la - lb).max()) if la.shape == lb.shape else None,
                "max_ssim_diff": float((ta["ssim"] - tb["ssim"]).abs().max()),
            }
        )
    )


class MeanRed(torch.nn.Module):
    """A black-box classifier (TorchScript) whose score is the mean red of the tile."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 20.0 * (x[:, 0].mean(dim=(1, 2)) - 0.6)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
