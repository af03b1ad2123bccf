"""``stylepath invert`` / ``train-encoder``: real tiles → latents of the generator.

The driver checks everything first (generator, classifier, tile size, selection), trains the
encoder once per generator and encoder config (a Ray task; cached in
``workdir/inversion/encoder.*``), then a pool of actors — each loading G, E, D's features and
the classifier once — inverts batches of one slide's tiles (encoder + batched refinement +
fidelity). The driver writes each finished batch as an atomic part file as it arrives and
finally consolidates the parts into ``inversion.parquet`` + ``latents.zarr``. A re-run skips
tiles that have a part. The latents do not depend on the classifier: with a new one the
parts are kept and only scored again (``prob_real`` / ``prob_recon`` from the tile and from
its reconstruction redrawn from the stored latents), not inverted again. Actors lost with
their process or node are replaced and their batches redone by ``tasks.pool.ResilientPool``
(rounds of fresh actors on live nodes).
"""

from __future__ import annotations

import sys
import time
import zlib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import ray
import torch
import torch.nn.functional as F

from pipeline.classifier.contract import (
    ClassifierSpec,
    load_classifier,
    resolve_spec,
    tiles_to_tensor,
)
from pipeline.config import (
    Config,
    InversionConfig,
    RefineConfig,
    SelectionConfig,
    config_from_dict,
)
from pipeline.gan.generator import TrainedGenerator, load_generator
from pipeline.gan.networks import Discriminator
from pipeline.inversion.encoder import Encoder, EncoderSpec
from pipeline.inversion.fidelity import fidelity
from pipeline.inversion.losses import LOSS_VERSION, DFeatures
from pipeline.inversion.refine import RefineSettings, refine
from pipeline.inversion.train_encoder import EncoderLoss, train_encoder
from pipeline.io.checkpoints import load_weights
from pipeline.io.files import files_sha256, workdir_lock
from pipeline.io.images import image_grid, save_png
from pipeline.io.inversion_store import InversionStore
from pipeline.io.parquet import read_parquet
from pipeline.io.paths import WorkPath, as_path
from pipeline.io.tile_store import TileStore
from pipeline.provenance import content_key
from pipeline.selection import per_slide_mask, top_confident
from tasks.pool import PoolStuckError, exit_once, fault_marker
from tasks.runtime import ensure_ray
from tasks.stage import (
    SCORED_BY,
    StageActor,
    actor_class,
    generator_folder,
    progress_bar,
    replicate_root,
    stage_device,
    stage_pool,
    tiled,
)


@dataclass(frozen=True)
class InvertJob:
    """A batch of one slide's tiles to invert."""

    slide_id: str
    indices: list[int]
    tile_ids: list[str]

    def call(self, actor: Any) -> ray.ObjectRef:
        return actor.invert.remote(self.slide_id, self.indices, self.tile_ids)


@dataclass(frozen=True)
class RescoreJob:
    """A kept part whose probabilities came from another classifier."""

    name: str

    def call(self, actor: Any) -> ray.ObjectRef:
        return actor.rescore.remote(self.name)


COLUMNS = [
    "tile_id",
    "slide_id",
    "index",
    "latent_row",
    "mse",
    "ssim",
    "prob_real",
    "prob_recon",
    "steps",
    "seconds",
    "status",
    "error",
]


class InversionInputError(ValueError):
    """No generator, tiles that do not fit it, or a selection that selects nothing."""


class InversionStuckError(RuntimeError):
    """No batch finished within ``inversion.task_timeout_s``."""


@dataclass
class InversionSummary:
    n_selected: int = 0
    n_skipped: int = 0  # finished by an earlier run
    n_inverted: int = 0  # now
    n_rescored: int = 0  # kept latents, scored again for a new classifier
    n_failed: int = 0
    seconds: float = 0.0
    work_seconds: float = 0.0
    tiles_per_s: float = 0.0
    median_ssim: float = float("nan")
    median_prob_diff: float = float("nan")
    encoder_trained: bool = False
    encoder_seconds: float = 0.0
    generator: str = ""
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass
class Prepared:
    cfg: Config
    gen_folder: WorkPath
    gen_fp: str
    gen: TrainedGenerator
    selection: pd.DataFrame
    tile_size: int
    clf_spec: ClassifierSpec
    use_d: bool
    clf_fp: str = ""


# -- checks ----------------------------------------------------------------------------------
def select_tiles(manifest: pd.DataFrame, sel: SelectionConfig, predictions: Path) -> pd.DataFrame:
    """The tiles to invert, in manifest order (``pipeline.selection``)."""
    if sel.mode == "all":
        return manifest
    if sel.mode == "per_slide":
        return manifest[per_slide_mask(manifest, sel.n, sel.seed)]
    if not predictions.is_file():
        raise InversionInputError(
            f"selection top_confident needs {predictions}; run `stylepath predict` first"
        )
    return top_confident(manifest, read_parquet(predictions), sel.k)


def prepare(cfg: Config) -> Prepared:
    """Everything checked before any work; nothing is written."""
    folder = generator_folder(cfg)
    if not (folder / "generator.json").is_file():
        raise InversionInputError(
            f"no generator in {folder}: run `stylepath train-gan` (and export), or set "
            "inversion.generator to an exported folder (e.g. models/demo_tiny64)"
        )
    gen = load_generator(folder)
    manifest, tile_size, channels = tiled(cfg.workdir, InversionInputError, "invert")
    if channels != gen.spec.img_channels:
        raise InversionInputError(
            f"tiles have {channels} channel(s) but the generator in {folder} makes "
            f"{gen.spec.img_channels}; use a generator trained on this modality"
        )
    res = gen.spec.resolution
    if tile_size != res and not cfg.inversion.resize_tiles:
        raise InversionInputError(
            f"tiles are {tile_size} px but the generator in {folder} makes {res} px; "
            "re-tile, use another generator, or set inversion.resize_tiles: true"
        )
    clf_spec = resolve_spec(cfg.classifier, cfg.workdir, tile_size, channels)
    load_classifier(clf_spec)  # the contract checks (ClassifierError)
    selection = select_tiles(manifest, cfg.inversion.selection, cfg.workdir / "predictions.parquet")
    if selection.empty:
        raise InversionInputError("inversion.selection selects no tiles")
    use_d = cfg.inversion.discriminator and (folder / "discriminator.safetensors").is_file()
    files = [folder / "generator.safetensors", folder / "generator.json"]
    gen_fp = files_sha256(files + ([folder / "discriminator.safetensors"] if use_d else []))
    return Prepared(
        cfg,
        folder,
        gen_fp,
        gen,
        selection.reset_index(drop=True),
        tile_size,
        clf_spec,
        use_d,
        clf_spec.fingerprint(),
    )


# -- the encoder -------------------------------------------------------------------------------
def encoder_spec(gen: TrainedGenerator, icfg: InversionConfig) -> EncoderSpec:
    return EncoderSpec(
        resolution=gen.spec.resolution,
        w_dim=gen.w_dim,
        num_ws=gen.num_ws,
        plus=icfg.space == "W+",
        width=icfg.encoder.width,
        channels=gen.spec.img_channels,
    )


def encoder_key(gen_fp: str, spec: EncoderSpec, icfg: InversionConfig) -> str:
    e = icfg.encoder.model_dump()
    for k in ("retrain", "num_cpus", "num_gpus"):
        e.pop(k)
    key = {"generator": gen_fp, "spec": spec.to_dict(), "train": e, "loss": LOSS_VERSION}
    return content_key(key, size=16)


def _gen_to(gen: TrainedGenerator, device: torch.device) -> TrainedGenerator:
    gen.G.to(device)
    gen.w_mean, gen.w_std = gen.w_mean.to(device), gen.w_std.to(device)
    return gen


def _train_encoder_job(
    gen_folder: WorkPath, spec: dict, settings: dict, num_cpus: float, num_gpus: float
) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """Runs as a Ray task: load G, train E on its samples, return E's weights + history."""
    torch.set_num_threads(max(1, int(num_cpus)))
    device = stage_device(num_gpus)
    gen = _gen_to(load_generator(gen_folder), device)
    E = Encoder(EncoderSpec.from_dict(spec), gen.w_mean, gen.w_std, seed=settings["seed"])
    E = E.to(device)
    loss = EncoderLoss(
        latent=settings["latent_weight"],
        pixel=settings["pixel_weight"],
        ssim=settings["ssim_weight"],
        truncation_mix=settings["truncation_mix"],
    )
    history = train_encoder(
        gen, E, settings["steps"], settings["batch"], settings["lr"], settings["seed"], loss
    )
    return {k: v.cpu() for k, v in E.state_dict().items()}, history


def ensure_encoder(
    prep: Prepared, store: InversionStore, force: bool = False
) -> tuple[dict[str, torch.Tensor], dict[str, Any], bool]:
    """The cached encoder for this generator and config, or train one (Ray task) and cache it.
    Returns (weights, meta, trained_now). Call under the workdir lock."""
    icfg = prep.cfg.inversion
    spec = encoder_spec(prep.gen, icfg)
    key = encoder_key(prep.gen_fp, spec, icfg)
    cached = None if (force or icfg.encoder.retrain) else store.load_encoder(key)
    if cached is not None:
        return cached[0], cached[1], False
    e = icfg.encoder
    t0 = time.perf_counter()
    ensure_ray(prep.cfg.ray)
    job = ray.remote(_train_encoder_job).options(num_cpus=e.num_cpus, num_gpus=e.num_gpus)
    weights, history = ray.get(
        job.remote(prep.gen_folder, spec.to_dict(), e.model_dump(), e.num_cpus, e.num_gpus)
    )
    last = history[-1] if history else {}
    meta = {
        "key": key,
        "generator": str(prep.gen_folder),
        "generator_fingerprint": prep.gen_fp,
        "spec": spec.to_dict(),
        "train": e.model_dump(),
        "steps": len(history),
        "seconds": round(time.perf_counter() - t0, 1),
        "final": {k: v for k, v in last.items() if k != "step"},
        "history": [
            {k: round(v, 5) for k, v in h.items()} for h in history[:: max(1, len(history) // 50)]
        ],
    }
    store.save_encoder(weights, meta)
    return weights, meta, True


def refine_settings(r: RefineConfig, steps: int | None = None) -> RefineSettings:
    """The refinement's settings from its config section (``steps`` overrides)."""
    kw = {f.name: getattr(r, f.name) for f in fields(RefineSettings)}
    return RefineSettings(**(kw if steps is None else kw | {"steps": steps}))


# -- the actor ---------------------------------------------------------------------------------
class Inverter(StageActor):
    """Loads G, E, D's features and the classifier once; inverts batches of one slide."""

    def __init__(
        self,
        gen_folder: WorkPath,
        use_d: bool,
        inversion_root: WorkPath,
        enc_key: str,
        enc_spec: dict,
        clf_spec: ClassifierSpec,
        tiles_root: WorkPath,
        icfg: InversionConfig,
        fault_marker: str | None = None,
    ) -> None:
        super().__init__(icfg.num_cpus, icfg.num_gpus)
        self.gen = _gen_to(load_generator(gen_folder), self.device)
        self.E = Encoder(EncoderSpec.from_dict(enc_spec), self.gen.w_mean, self.gen.w_std)
        cached = InversionStore(inversion_root).load_encoder(enc_key)
        if cached is None:
            raise RuntimeError(f"{inversion_root}: the cached encoder {enc_key} is gone")
        self.E.load_state_dict(cached[0])
        self.E.to(self.device).eval().requires_grad_(False)
        self.feats = None
        if use_d:
            D = Discriminator(self.gen.spec)
            D.load_state_dict(load_weights(as_path(gen_folder) / "discriminator.safetensors"))
            self.feats = DFeatures(D).to(self.device)
        self.clf = load_classifier(clf_spec, self.device).eval().requires_grad_(False)
        self.clf_fp = clf_spec.fingerprint()
        self.store = TileStore(tiles_root)
        self.parts = InversionStore(inversion_root)
        self.icfg = icfg
        self.settings = refine_settings(icfg.refine)
        self.fault_marker = fault_marker

    def _targets(self, slide_id: str, indices: list[int] | np.ndarray) -> torch.Tensor:
        """The tiles as the generator's images: [n, C, R, R] in [0, 1] on the device."""
        tiles = self.store.read_tiles(slide_id, np.asarray(indices))
        x = tiles_to_tensor(tiles).to(self.device)
        res = self.gen.spec.resolution
        if x.shape[-1] != res:
            x = F.interpolate(
                x,
                size=(res, res),
                mode="bilinear",
                align_corners=False,
                antialias=x.shape[-1] > res,
            )
        return x

    def invert(self, slide_id: str, indices: list[int], tile_ids: list[str]) -> dict[str, Any]:
        exit_once(self.fault_marker)  # the test hook: die mid-batch, once
        t0 = time.perf_counter()
        x = self._targets(slide_id, indices)
        with torch.no_grad():
            w0 = self.E(x)
        seed = self.icfg.seed + zlib.crc32(f"{slide_id}:{indices[0]}".encode())
        out = refine(self.gen, w0, x, self.settings, self.feats, seed=seed)
        fid = fidelity(x, out.img, self.clf)
        n = len(indices)
        seconds = (time.perf_counter() - t0) / n
        latents = out.w if out.w.ndim == 3 else out.w[:, None]
        rows = pd.DataFrame(
            {
                "tile_id": tile_ids,
                "slide_id": slide_id,
                "index": np.asarray(indices, np.int64),
                **fid,
                "steps": np.int32(self.settings.steps),
                "seconds": np.float32(seconds),
                "status": ["failed" if f else "ok" for f in out.failed],
                "error": [f or "" for f in out.failed],
                SCORED_BY: self.clf_fp,
            }
        )
        return {
            "name": part_name(slide_id, indices),
            "rows": rows,
            "latents": latents.float().cpu().numpy(),
        }

    def rescore(self, name: str) -> dict[str, Any]:
        """A kept part's ``prob_real`` / ``prob_recon`` by this actor's classifier: the tiles,
        and their reconstructions redrawn from the stored latents (constant noise, as the
        refinement drew them); latents, MSE and SSIM stay as they are."""
        exit_once(self.fault_marker)
        rows, latents = self.parts.read_part(name)
        rows = rows.copy()
        ok = (rows["status"] == "ok").to_numpy() & np.isfinite(latents).all(axis=(1, 2))
        if ok.any():
            x = self._targets(str(rows["slide_id"].iloc[0]), rows["index"].to_numpy()[ok])
            w = torch.from_numpy(latents[ok]).to(self.device)
            with torch.no_grad():
                recon = self.gen.synthesis(w if w.shape[1] > 1 else w[:, 0])
                for col, img in (("prob_real", x), ("prob_recon", recon)):
                    rows.loc[ok, col] = self.clf.prob(self.clf(img)).float().cpu().numpy()
        rows[SCORED_BY] = self.clf_fp
        return {"name": name, "rows": rows}


# -- the stage ---------------------------------------------------------------------------------
def parts_fingerprint(prep: Prepared, enc_key: str) -> str:
    icfg = prep.cfg.inversion
    return content_key(
        {
            "generator": prep.gen_fp,
            "encoder": enc_key,
            "space": icfg.space,
            "refine": icfg.refine.model_dump(),
            "seed": icfg.seed,
            "use_d": prep.use_d,
            "resize": icfg.resize_tiles,
        },
        size=16,
    )


def part_name(slide_id: str, indices: list[int]) -> str:
    return f"{slide_id}-{indices[0]:07d}"


def _jobs(todo: pd.DataFrame, batch: int) -> list[InvertJob]:
    jobs = []
    for sid, g in todo.groupby("slide_id", sort=False):
        g = g.sort_values("index")
        idx, ids = g["index"].astype(int).tolist(), g["tile_id"].astype(str).tolist()
        jobs += [
            InvertJob(str(sid), idx[a : a + batch], ids[a : a + batch])
            for a in range(0, len(idx), batch)
        ]
    return jobs


def stale_scores(store: InversionStore, prep: Prepared) -> dict[str, int]:
    """Kept parts with selected tiles whose probabilities came from another classifier:
    part name → rows."""
    selected = set(prep.selection["tile_id"].astype(str))
    stale = {}
    for name, rows in store.part_rows():
        scored = rows[SCORED_BY] if SCORED_BY in rows else pd.Series("", index=rows.index)
        if (scored != prep.clf_fp).any() and not selected.isdisjoint(rows["tile_id"].astype(str)):
            stale[name] = len(rows)
    return stale


def failed_part(job: InvertJob, error: str, prep: Prepared) -> tuple[pd.DataFrame, np.ndarray]:
    """Rows of a batch given up (its actors kept dying), NaN latents: reported, not analysed."""
    sid, indices, ids = job.slide_id, job.indices, job.tile_ids
    n = len(ids)
    nan = np.full(n, np.nan, np.float32)
    rows = pd.DataFrame(
        {
            "tile_id": ids,
            "slide_id": sid,
            "index": np.asarray(indices, np.int64),
            "mse": nan,
            "ssim": nan,
            "prob_real": nan,
            "prob_recon": nan,
            "steps": np.int32(0),
            "seconds": nan,
            "status": "failed",
            "error": error,
            SCORED_BY: prep.clf_fp,
        }
    )
    n_ws = prep.gen.num_ws if prep.cfg.inversion.space == "W+" else 1
    return rows, np.full((n, n_ws, prep.gen.w_dim), np.nan, np.float32)


def consolidate(store: InversionStore, selection: pd.DataFrame) -> pd.DataFrame:
    """Parts → one row per selected tile (the last part wins), latents in the same order."""
    rows, lats = store.read_parts()
    rows = rows.assign(_row=np.arange(len(rows)))
    rows = rows.drop_duplicates("tile_id", keep="last")
    order = selection[["tile_id"]].astype(str).merge(rows, on="tile_id", how="inner")
    latents = lats[order["_row"].to_numpy()] if len(order) else lats[:0]
    order = order.drop(columns="_row")
    order["latent_row"] = np.arange(len(order), dtype=np.int64)
    table = order[COLUMNS].reset_index(drop=True)
    store.write_outputs(table, latents)
    return table


def _examples_png(
    prep: Prepared, store: InversionStore, table: pd.DataFrame, path: Path, n: int = 16
) -> None:
    """Tiles beside their reconstructions, picked across the SSIM range (worst → best)."""
    ok = table[table["status"] == "ok"].sort_values("ssim", kind="stable")
    if ok.empty:
        return
    pick = ok.iloc[np.unique(np.linspace(0, len(ok) - 1, min(n, len(ok))).astype(int))]
    tiles = TileStore(prep.cfg.workdir / "tiles")
    real = np.stack([tiles.read_tiles(r.slide_id, [r.index])[0] for r in pick.itertuples()])
    w = torch.from_numpy(store.read_latents(pick["latent_row"].to_numpy()))
    with torch.no_grad():
        recon = prep.gen.synthesis(w if w.shape[1] > 1 else w[:, 0])
    rec = (recon.permute(0, 2, 3, 1).numpy() * 255 + 0.5).astype(np.uint8)
    if rec.shape[1:] != real.shape[1:]:
        real = (tiles_to_tensor(real)).numpy()  # sizes differ only with resize_tiles
        real = (
            F.interpolate(torch.from_numpy(real), size=rec.shape[1:3]).permute(0, 2, 3, 1).numpy()
            * 255
            + 0.5
        ).astype(np.uint8)
    cells = np.stack([c for pair in zip(real, rec, strict=True) for c in pair])
    save_png(path, image_grid(cells, 8))


def replicate_config(cfg: Config, replicate: int) -> Config:
    """The config of replicate ``replicate``: the refinement and the encoder seeded
    ``replicate`` further (a new encoder, a new refinement draw), all else as configured."""
    if replicate == 0:
        return cfg
    data = cfg.dump()
    inv = data["inversion"]
    inv["seed"] += replicate
    inv["encoder"]["seed"] += replicate
    return config_from_dict(data)


def _invert(prep: Prepared, store: InversionStore, progress: bool) -> InversionSummary:
    """One replicate: the encoder (cached), then the pool over the unfinished tiles, then the
    consolidated outputs. Call under the workdir lock."""
    t0 = time.perf_counter()
    cfg, icfg = prep.cfg, prep.cfg.inversion
    summary = InversionSummary(n_selected=len(prep.selection), generator=str(prep.gen_folder))
    _, meta, trained = ensure_encoder(prep, store)
    summary.encoder_trained = trained
    summary.encoder_seconds = float(meta.get("seconds", 0.0)) if trained else 0.0
    slides = TileStore(cfg.workdir / "tiles").slide_fingerprints()
    store.reset_parts(parts_fingerprint(prep, meta["key"]), slides)
    done = store.finished_ids()
    todo = prep.selection[~prep.selection["tile_id"].astype(str).isin(done)]
    summary.n_skipped = len(prep.selection) - len(todo)
    stale = stale_scores(store, prep)
    jobs: list[InvertJob | RescoreJob] = list(_jobs(todo, icfg.batch_size))
    jobs += [RescoreJob(name) for name in stale]
    t_work = time.perf_counter()
    if jobs:
        stats = _run_pool(
            prep, store, meta, jobs, len(todo) + sum(stale.values()), summary, progress
        )
        summary.extras["pool"] = {k: v for k, v in vars(stats).items() if k != "errors"}
    summary.work_seconds = time.perf_counter() - t_work
    table = consolidate(store, prep.selection)
    ok = table[table["status"] == "ok"]
    summary.n_failed = int((table["status"] != "ok").sum())
    summary.median_ssim = float(ok["ssim"].median()) if len(ok) else float("nan")
    summary.median_prob_diff = (
        float((ok["prob_real"] - ok["prob_recon"]).abs().median()) if len(ok) else float("nan")
    )
    summary.tiles_per_s = summary.n_inverted / max(summary.work_seconds, 1e-9)
    _examples_png(prep, store, table, store.root / "examples.png")
    summary.seconds = time.perf_counter() - t0
    return summary


def _run_pool(
    prep: Prepared,
    store: InversionStore,
    meta: dict[str, Any],
    jobs: list[InvertJob | RescoreJob],
    n_tiles: int,
    summary: InversionSummary,
    progress: bool | None,
) -> Any:
    """The actor pool over ``jobs`` (invert / rescore), committing each part as it arrives."""
    cfg, icfg = prep.cfg, prep.cfg.inversion
    ensure_ray(cfg.ray)
    actor_cls = actor_class(Inverter, icfg)
    # Small arguments only: a new actor re-reads the encoder from the workdir.
    # Paths stay path objects: a URL keeps its storage options.
    args = (
        prep.gen_folder,
        prep.use_d,
        store.root,
        meta["key"],
        meta["spec"],
        prep.clf_spec,
        cfg.workdir / "tiles",
        icfg,
        fault_marker(),
    )
    with progress_bar(n_tiles, "tile", "invert", progress) as bar:

        def on_result(job: InvertJob | RescoreJob, r: dict[str, Any]) -> None:
            if isinstance(job, RescoreJob):
                store.write_part_rows(r["name"], r["rows"])
                summary.n_rescored += len(r["rows"])
            else:
                store.write_part(r["name"], r["rows"], r["latents"])
                summary.n_inverted += len(r["rows"])
            bar.update(len(r["rows"]))

        def on_give_up(job: InvertJob | RescoreJob, why: str) -> None:
            if isinstance(job, RescoreJob):  # latents kept; probabilities unknown: not analysed
                rows = store.read_part(job.name)[0].assign(
                    prob_real=np.nan,
                    prob_recon=np.nan,
                    status="failed",
                    error=f"scoring by the new classifier: {why}",
                    **{SCORED_BY: prep.clf_fp},
                )
                store.write_part_rows(job.name, rows)
            else:
                rows, lat = failed_part(job, why, prep)
                store.write_part(part_name(job.slide_id, job.indices), rows, lat)
            bar.update(len(rows))

        pool = stage_pool(icfg, lambda: actor_cls.remote(*args), lambda a, j: j.call(a), len(jobs))
        try:
            return pool.run(jobs, on_result, on_give_up)
        except PoolStuckError as exc:
            raise InversionStuckError(
                f"inversion stopped: {exc} (inversion.task_timeout_s); finished batches "
                "are kept and a re-run resumes"
            ) from None


def run_invert(cfg: Config, progress: bool | None = None) -> InversionSummary:
    """Invert the selected tiles (skipping finished ones), then each further replicate
    (``inversion.replicates``: the same tiles under other seeds, which the analysis' CI
    covers); see the module docstring. Returns the first replicate's summary, the others'
    in ``extras["replicates"]``."""
    t0 = time.perf_counter()
    preps = [prepare(replicate_config(cfg, r)) for r in range(cfg.inversion.replicates)]
    if progress is None:
        progress = sys.stderr.isatty()
    with workdir_lock(cfg.workdir):
        done = [
            _invert(p, InversionStore(replicate_root(cfg, r)), progress)
            for r, p in enumerate(preps)
        ]
    summary = done[0]
    if len(done) > 1:
        summary.extras["replicates"] = [
            {
                k: getattr(s, k)
                for k in (
                    "n_inverted",
                    "n_skipped",
                    "n_failed",
                    "median_ssim",
                    "encoder_trained",
                    "seconds",
                )
            }
            for s in done[1:]
        ]
    summary.seconds = time.perf_counter() - t0
    return summary


def run_train_encoder(cfg: Config) -> tuple[dict[str, Any], bool]:
    """Train (or find cached) the encoder of the configured generator: (meta, trained_now)."""
    prep = prepare(cfg)
    store = InversionStore(cfg.workdir / "inversion")
    with workdir_lock(cfg.workdir):
        _, meta, trained = ensure_encoder(prep, store)
    return meta, trained
