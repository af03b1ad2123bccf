"""``stylepath analyze``: directions, latent shifts, feature effects, trust gates and verdicts
→ cohort parquet reports.

1. Directions: the classifier's, fitted on synthesised samples (drawn by the pool's first
   job, which also measures the features of some samples for the generator gate, and cached
   in ``samples.npz``); metadata ones, fitted on
   the inverted real tiles' latents (slide-grouped, within label strata); optional principal
   ones; the classifier's with the metadata directions projected out (conditional); and
   ``analysis.random_directions`` random ones drawn from W's covariance (the specificity
   null). For each further inversion replicate (``inversion.replicates``) the directions are
   fitted again: on a bootstrap resample of the samples, and on that replicate's latents.
2. Fidelity and probes (a Ray actor pool; each actor loads G and the classifier once): the
   selected tiles' features and scores, their reconstructions' SSIM to them and to reference
   tiles of other slides — the fidelity gate (``analysis.fidelity``) keeps the faithful
   tiles — and their scores under pixel-space perturbations (``analysis.probes``).
3. Shifts (the same pool): every faithful tile moved along every direction over the α grid,
   per replicate (random directions: the first replicate only), synthesised, scored,
   measured; and the first samples along every classifier and conditional direction (the
   editability gate's reference). Results are written as part files as they complete, keyed
   by their inputs: a re-run — also one with new slides — computes only the missing parts.
   Images and features do not depend on the classifier, so a new classifier re-scores the
   parts whose direction it leaves unchanged instead of measuring them again
   (``scored_by``).
4. Reports under ``workdir/analysis/`` (each with provenance metadata): ``directions``,
   ``fidelity``, ``shifts``, ``feature_effects`` (with specificity), ``null_effects``,
   ``cohort_bias``, ``perturbations``, ``agreement`` and ``verdicts`` (.parquet), and
   ``generator.json`` (the generator gate).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import ray
import torch

from pipeline.classifier.contract import ClassifierSpec, load_classifier, resolve_spec
from pipeline.config import AnalysisConfig, Config
from pipeline.directions import shift_latents
from pipeline.directions.sets import DirectionSet, FitSpec, fit_set
from pipeline.features import compute_features, feature_names
from pipeline.gan.generator import load_generator
from pipeline.inversion.fidelity import fidelity_gate, reference_ssim
from pipeline.inversion.losses import mse, ssim
from pipeline.io.files import atomic_write, atomic_write_json, files_sha256, workdir_lock
from pipeline.io.inversion_store import InversionStore
from pipeline.io.parquet import read_parquet, write_parquet
from pipeline.io.paths import WorkPath, remove_tree
from pipeline.io.tile_store import TileStore
from pipeline.probes.perturb import Probe, probe_list, probe_scores, stain_stats
from pipeline.provenance import content_key, provenance
from pipeline.reports.findings import Samples, findings
from pipeline.selection import per_slide, reference_pick
from tasks import stage
from tasks.pool import exit_once, fault_marker
from tasks.runtime import ensure_ray
from tasks.stage import StageActor, actor_class, progress_bar, run_stage_pool

OUT = "analysis"
PARTS_VERSION = 4  # bump when a part's content changes for the same key
TABLES_VERSION = 2  # bump when the tables made from the same parts change (2: editability)
N_FEATURE_SAMPLES = 512  # samples measured for the generator gate
N_EDIT_SAMPLES = 64  # samples shifted like the tiles, for the editability gate
EDIT_COLUMNS = ["direction", "replicate", "tile_id", "slide_id", "alpha", "logit"]


class AnalysisInputError(ValueError):
    """Missing inputs (inversion, classifier) or a config the cohort cannot satisfy."""


@dataclass
class AnalysisSummary:
    directions: list[str] = field(default_factory=list)
    not_estimable: list[dict] = field(default_factory=list)
    verdicts: dict[str, str] = field(default_factory=dict)
    n_tiles: int = 0
    n_faithful: int = 0
    n_frames: int = 0
    n_parts_reused: int = 0  # shift/real parts kept from earlier runs (same inputs)
    n_parts_rescored: int = 0  # of those, re-scored by a new classifier (features kept)
    skipped: bool = False
    seconds: float = 0.0
    out: Path | None = None


@dataclass
class Inputs:
    """What the stage reads, checked: the generator, classifier, features and each inversion
    replicate's successfully inverted tiles (with their manifest metadata) and latents."""

    gen_dir: WorkPath
    spec: ClassifierSpec
    features: list[str]
    inverted: list[tuple[pd.DataFrame, np.ndarray]]  # per replicate: table, latents [n, L, D]


# -- inputs ------------------------------------------------------------------------------------
def load_inverted(cfg: Config, replicate: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """Successfully inverted tiles of one replicate (with their manifest metadata) and their
    latents [n, L, D] (L = 1 for W)."""
    store = InversionStore(stage.replicate_root(cfg, replicate))
    if not store.table.is_file() or not store.latents_path.exists():
        hint = "" if replicate == 0 else f" (replicate {replicate} of inversion.replicates)"
        raise AnalysisInputError(
            f"{store.root}: no inversion results{hint}; run `stylepath invert`"
        )
    inv = store.read_table()
    lat = np.asarray(store.read_latents(), dtype=np.float32)
    if lat.ndim == 2:
        lat = lat[:, None, :]
    inv = inv[inv["status"] == "ok"] if "status" in inv else inv
    manifest = TileStore(cfg.workdir / "tiles").read_manifest()
    meta_cols = [c for c in manifest.columns if c not in inv.columns or c == "tile_id"]
    inv = inv.merge(manifest[meta_cols], on="tile_id", how="left").reset_index(drop=True)
    if inv.empty:
        raise AnalysisInputError(f"{store.root}: no successfully inverted tiles")
    return inv, lat[inv["latent_row"].to_numpy()]


def load_inputs(cfg: Config) -> Inputs:
    """Every input, checked before any work (raises ``AnalysisInputError``)."""
    a = cfg.analysis
    gen_dir = stage.generator_folder(cfg)
    if not (gen_dir / "generator.safetensors").is_file():
        raise AnalysisInputError(f"{gen_dir}: no generator (train-gan, or inversion.generator)")
    inverted = [load_inverted(cfg, r) for r in range(cfg.inversion.replicates)]
    missing = [c for c in a.metadata if c not in inverted[0][0].columns]
    if missing:
        raise AnalysisInputError(f"analysis.metadata: cohort has no column(s) {missing}")
    registered = feature_names(cfg.modality)
    features = a.features or registered
    unknown = [f for f in features if f not in registered]
    if unknown:
        raise AnalysisInputError(
            f"analysis.features: unknown {unknown} for modality {cfg.modality} "
            f"(registered: {registered})"
        )
    tile_size, channels = TileStore(cfg.workdir / "tiles").tile_shape()
    spec = resolve_spec(cfg.classifier, cfg.workdir, tile_size, channels)
    load_classifier(spec)  # checked before any work
    return Inputs(gen_dir, spec, features, inverted)


# -- Ray side ----------------------------------------------------------------------------------
def draw_samples(
    gen: Any, clf: Any, n: int, seed: int, measure: dict[str, Any], device: str | torch.device
) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """Latents w of ``n`` samples, the classifier's logits on their images and the features
    (``measure``: names, modality, µm/px) of the first ``N_FEATURE_SAMPLES``."""
    g = torch.Generator().manual_seed(seed)
    ws, logits, feats = [], [], []
    with torch.no_grad():
        for a in range(0, n, 256):
            z = torch.randn(min(256, n - a), gen.z_dim, generator=g).to(device)
            w = gen.mapping(z)
            img = gen.synthesis(w)
            logits.append(clf(img).reshape(len(w), -1).float().cpu().numpy())
            ws.append(w.cpu().numpy())
            if a < N_FEATURE_SAMPLES:
                u8 = (img * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
                mpp = np.full(len(u8), measure["mpp"])
                feats.append(
                    compute_features(u8, mpp, measure["names"], modality=measure["modality"])
                )
    return np.concatenate(ws), np.concatenate(logits), pd.concat(feats, ignore_index=True)


def shifted_sample_logits(
    gen: Any,
    clf: Any,
    w: np.ndarray,
    move: tuple[int, str, np.ndarray, float],
    alphas: list[float],
    device: str | torch.device,
) -> pd.DataFrame:
    """Latents ``w`` (W [N, w_dim] or W+ [N, num_ws, w_dim]) shifted along ``move``
    (replicate, direction, vector, σ) by ``alphas`` and scored: rows ``direction, replicate,
    tile_id, slide_id, alpha, logit`` as the tiles' shifts (the editability gate's
    reference, and ``bench/inversion.py``'s)."""
    replicate, name, vec, sigma = move
    a = np.asarray(alphas, np.float32)
    shifted = shift_latents(w, vec, a, sigma).reshape(len(w) * len(a), *w.shape[1:])
    with torch.no_grad():
        x = torch.from_numpy(np.ascontiguousarray(shifted, np.float32)).to(device)
        logit = torch.cat([clf.score(clf(gen.synthesis(b))) for b in x.split(256)])
    return pd.DataFrame(
        {
            "tile_id": np.repeat([f"sample-{i}" for i in range(len(w))], len(a)),
            "slide_id": "samples",
            "alpha": np.tile(a, len(w)),
            "direction": name,
            "replicate": replicate,
            "logit": logit.float().cpu().numpy(),
        }
    )


class Shifter(StageActor):
    """Synthesises, scores and measures latents; loads G and the classifier once."""

    def __init__(
        self,
        gen_dir: WorkPath,
        spec: ClassifierSpec,
        modality: str,
        features: list[str],
        tiles_root: WorkPath,
        acfg: AnalysisConfig,
        fault: str | None = None,
    ) -> None:
        super().__init__(acfg.num_cpus, acfg.num_gpus)
        self.gen = load_generator(gen_dir)
        self.gen.G.to(self.device)
        self.clf = load_classifier(spec, self.device)
        self.scored_by = spec.fingerprint()
        self.modality, self.features = modality, features
        self.store = TileStore(tiles_root)
        self.fault = fault

    def _score(self, images: torch.Tensor) -> dict[str, np.ndarray]:
        with torch.no_grad():
            z = self.clf(images)
        return {
            "logit": self.clf.score(z).float().cpu().numpy(),
            "prediction": self.clf.prob(z).float().cpu().numpy(),
        }

    def _synth(self, latents: np.ndarray) -> torch.Tensor:
        w = torch.from_numpy(np.ascontiguousarray(latents, np.float32)).to(self.device)
        with torch.no_grad():
            return self.gen.synthesis(w if w.shape[1] > 1 else w[:, 0])

    def _measured(
        self, images: np.ndarray, mpp: np.ndarray, ids: pd.DataFrame, kept: pd.DataFrame | None
    ) -> pd.DataFrame:
        """The features of ``images`` (uint8 [N, H, W, C]), or, re-scoring, ``kept``'s: an
        earlier part of the same inputs, whose rows must be ``ids``'s."""
        if kept is None:
            return compute_features(images, mpp, self.features, modality=self.modality)
        same = kept[list(ids.columns)].reset_index(drop=True)
        if not same.equals(ids.reset_index(drop=True)):
            raise ValueError("re-scored part's rows do not match its inputs")
        return kept[self.features].reset_index(drop=True)

    def shift(self, job: ShiftJob) -> tuple[str, pd.DataFrame]:
        """One part: ``job.tiles`` (tile_id, slide_id, mpp) × α → rows with prediction and
        features (each frame measured at its source tile's µm/px). With ``job.kept`` (this
        part from another classifier) the frames are only scored again."""
        exit_once(self.fault)  # the test hook: die mid-job, once
        alphas = np.asarray(job.alphas, np.float32)
        shifted = shift_latents(job.latents, job.vector, alphas, job.sigma)
        n, a = shifted.shape[:2]
        img = self._synth(shifted.reshape(n * a, *shifted.shape[2:]))
        u8 = (img * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
        mpp = np.repeat(job.tiles["mpp"].to_numpy(np.float64), a)
        ids = pd.DataFrame(
            {
                "tile_id": np.repeat(job.tiles["tile_id"].to_numpy(), a),
                "slide_id": np.repeat(job.tiles["slide_id"].to_numpy(), a),
                "direction": job.direction,
                "replicate": np.int16(job.replicate),
                "alpha": np.tile(alphas, n),
            }
        )
        feats = self._measured(u8, mpp, ids, job.kept)
        rows = ids.assign(**self._score(img), **{stage.SCORED_BY: self.scored_by})
        return job.key, pd.concat([rows, feats], axis=1)

    def real(self, job: RealJob) -> tuple[str, pd.DataFrame]:
        """Features and scores of one slide's selected real tiles (the features' SD over
        real tiles), and their reconstructions' SSIM, PSNR and ``ssim_reference`` (the
        identity quantile of its SSIM to the reference tiles of other slides); with
        ``job.kept``, only scored again."""
        exit_once(self.fault)
        order = np.argsort(job.indices)
        tiles = self.store.read_tiles(job.slide_id, job.indices[order])
        mpp = np.asarray(job.mpp, np.float64)[order]
        x = torch.from_numpy(tiles).permute(0, 3, 1, 2).float().div(255).to(self.device)
        ids = pd.DataFrame({"slide_id": job.slide_id, "index": job.indices[order]})
        rows = ids.assign(**self._score(x), **{stage.SCORED_BY: self.scored_by})
        if job.kept is not None:
            fid = job.kept[["ssim", "psnr", "ssim_reference"]].reset_index(drop=True)
        else:
            recon = self._synth(job.latents[order])
            ref_obj = job.reference  # an ObjectRef inside the job: not resolved by Ray itself
            ref, ref_slides = ray.get(ref_obj) if isinstance(ref_obj, ray.ObjectRef) else ref_obj
            q = job.quantile if job.quantile is not None else 0.5
            fid = pd.DataFrame(
                {
                    "ssim": ssim(recon, x).float().cpu().numpy(),
                    "psnr": (-10 * torch.log10(mse(recon, x).clamp_min(1e-10))).cpu().numpy(),
                    "ssim_reference": reference_ssim(
                        recon, ref.to(self.device), ids["slide_id"].to_numpy(), ref_slides, q
                    ),
                }
            )
        feats = self._measured(tiles, mpp, ids, job.kept)
        return job.key, pd.concat([rows, fid, feats], axis=1)

    def probe(self, job: ProbeJob) -> tuple[str, pd.DataFrame]:
        """The slide's selected tiles under every probe, scored (no generator)."""
        exit_once(self.fault)
        order = np.argsort(job.indices)
        tiles = self.store.read_tiles(job.slide_id, job.indices[order])

        def score(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            t = torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).float().div(255)
            s = self._score(t.to(self.device))
            return s["logit"], s["prediction"]

        tg = job.targets
        targets = ray.get(tg) if isinstance(tg, ray.ObjectRef) else tg
        ids = job.ids.iloc[order].reset_index(drop=True)
        rows = probe_scores(tiles, job.mpp[order], ids, job.probes, score, job.seed, targets)
        return job.key, rows.assign(**{stage.SCORED_BY: self.scored_by})

    def samples(self, job: SampleJob) -> tuple[str, tuple[np.ndarray, np.ndarray, pd.DataFrame]]:
        """The analysis' generator samples (``draw_samples``)."""
        exit_once(self.fault)
        return job.key, draw_samples(self.gen, self.clf, job.n, job.seed, job.measure, self.device)

    def edit(self, job: EditJob) -> tuple[str, pd.DataFrame]:
        """Generator samples shifted along one direction and scored (``shifted_sample_logits``)."""
        exit_once(self.fault)
        rows = shifted_sample_logits(
            self.gen, self.clf, job.latents, job.move, job.alphas, self.device
        )
        return job.key, rows.assign(**{stage.SCORED_BY: self.scored_by})


@dataclass(frozen=True, eq=False)
class SampleJob:
    """The ``n`` samples the directions are fitted on, saved to ``path`` (not a part)."""

    key: str
    path: WorkPath
    n: int
    seed: int
    measure: dict[str, Any]

    def call(self, actor: Any) -> ray.ObjectRef:
        return actor.samples.remote(self)


@dataclass(frozen=True, eq=False)
class EditJob:
    """One part of the editability gate: samples shifted along one direction."""

    key: str
    move: tuple[int, str, np.ndarray, float]  # replicate, direction, vector, σ
    alphas: list[float]
    latents: np.ndarray

    def call(self, actor: Any) -> ray.ObjectRef:
        return actor.edit.remote(self)


@dataclass(frozen=True, eq=False)
class ShiftJob:
    """One part of shifts: ``tiles`` of one slide along ``direction`` (one replicate)."""

    key: str
    replicate: int
    direction: str
    vector: np.ndarray
    sigma: float
    alphas: list[float]
    tiles: pd.DataFrame
    latents: np.ndarray
    kept: pd.DataFrame | None = None

    def call(self, actor: Any) -> ray.ObjectRef:
        return actor.shift.remote(self)


@dataclass(frozen=True, eq=False)
class ProbeJob:
    """One part of probes: one slide's selected tiles under every probe, scored."""

    key: str
    slide_id: str
    indices: np.ndarray
    mpp: np.ndarray
    ids: pd.DataFrame  # tile_id, slide_id, center (the stain groups' column, as ``center``)
    probes: list[Probe]
    targets: Any  # group → stain statistics, or an ObjectRef of them
    seed: int
    kept: pd.DataFrame | None = None

    def call(self, actor: Any) -> ray.ObjectRef:
        return actor.probe.remote(self)


@dataclass(frozen=True, eq=False)
class RealJob:
    """One part of real tiles: one slide's selected tiles, features and fidelity."""

    key: str
    slide_id: str
    indices: np.ndarray
    mpp: np.ndarray
    latents: np.ndarray
    reference: Any  # (tiles [M, C, R, R], slide ids [M]), or an ObjectRef of them
    quantile: float | None
    kept: pd.DataFrame | None = None

    def call(self, actor: Any) -> ray.ObjectRef:
        return actor.real.remote(self)


Job = SampleJob | EditJob | ShiftJob | RealJob | ProbeJob


# -- driver ------------------------------------------------------------------------------------
def fingerprint(cfg: Config, inputs: Inputs) -> str:
    tables = [
        InversionStore(stage.replicate_root(cfg, r)).table for r in range(len(inputs.inverted))
    ]
    files = files_sha256([inputs.gen_dir / "generator.safetensors", *tables])
    parts = [files, inputs.spec.fingerprint(), cfg.dump()["analysis"], cfg.tiling.mpp]
    parts.append(TABLES_VERSION)
    if cfg.modality != "histology":
        parts.append(cfg.modality)
    return content_key(*parts, size=16)


def parts_fingerprint(cfg: Config, inputs: Inputs) -> str:
    """What every part's images and features depend on (generator, features, µm/px) — not
    which tiles were inverted (part keys name their own inputs: direction, tiles, latents,
    reference tiles), nor the classifier (each part's rows name the one that scored them),
    nor the settings that only read the parts (gates, bootstrap, null sizes)."""
    weights = files_sha256([inputs.gen_dir / "generator.safetensors"])
    parts = [PARTS_VERSION, weights, inputs.features, cfg.tiling.mpp]
    if cfg.modality != "histology":
        parts.append(cfg.modality)
    return content_key(*parts, size=16)


def sample_job(cfg: Config, inputs: Inputs, cache: WorkPath) -> SampleJob:
    """The job of the ``n_samples`` latents, their logits and some samples' features, kept
    in ``cache`` under a key of generator, classifier, count, seed and features."""
    a = cfg.analysis
    weights = files_sha256([inputs.gen_dir / "generator.safetensors"])
    measure = {"names": inputs.features, "modality": cfg.modality, "mpp": cfg.tiling.mpp}
    key = content_key(weights, inputs.spec.fingerprint(), a.n_samples, a.seed, measure)
    return SampleJob(key, cache, a.n_samples, a.seed, measure)


def load_samples(job: SampleJob) -> Samples | None:
    """The cached samples of ``job``, or None when there are none under its key."""
    try:
        with job.path.open("rb") as fh, np.load(fh) as z:
            if str(z["key"]) == job.key:
                feats = pd.DataFrame(z["features"], columns=[str(c) for c in z["names"]])
                return Samples(z["w"], z["logits"], feats)
    except (FileNotFoundError, KeyError, ValueError, OSError):
        pass
    return None


def save_samples(job: SampleJob, result: tuple[np.ndarray, np.ndarray, pd.DataFrame]) -> None:
    w, logits, feats = result

    def save(tmp: Path) -> None:
        with open(tmp, "wb") as fh:  # np.savez(path) would append ".npz" to the temp name
            np.savez(
                fh,
                key=np.array(job.key),
                w=w,
                logits=logits,
                features=feats.to_numpy(float),
                names=np.array(list(feats.columns)),
            )

    atomic_write(job.path, save)


class PartRunner:
    """The parts of one analysis: which exist, which to (re)do, the pool that does them."""

    def __init__(
        self, cfg: Config, inputs: Inputs, parts: WorkPath, summary: AnalysisSummary, progress: bool
    ) -> None:
        self.cfg, self.inputs, self.parts = cfg, inputs, parts
        self.summary, self.progress = summary, progress
        self.scored_by = inputs.spec.fingerprint()
        self.keys: list[str] = []

    def kept(self, key: str) -> tuple[bool, pd.DataFrame | None]:
        """(part to (re)do?, its rows to re-score): a part another classifier scored keeps
        its features."""
        self.keys.append(key)
        path = self.parts / f"{key}.parquet"
        if not path.is_file():
            return True, None
        if (read_parquet(path, columns=[stage.SCORED_BY])[stage.SCORED_BY] == self.scored_by).all():
            self.summary.n_parts_reused += 1
            return False, None
        self.summary.n_parts_rescored += 1
        self.summary.n_parts_reused += 1
        return True, read_parquet(path)

    def run(self, jobs: list[Job], desc: str) -> None:
        """Do ``jobs`` on a resilient pool of ``Shifter`` actors, committing each part."""
        if not jobs:
            return
        a, cfg, inp = self.cfg.analysis, self.cfg, self.inputs
        actor_cls = actor_class(Shifter, a)
        fault = fault_marker()
        args = (inp.gen_dir, inp.spec, cfg.modality, inp.features, cfg.workdir / "tiles", a, fault)
        with progress_bar(len(jobs), "part", desc, self.progress) as bar:

            def on_result(job: Job, result: tuple) -> None:
                key, out = result
                if isinstance(job, SampleJob):
                    save_samples(job, out)
                else:  # committed: a re-run skips it
                    write_parquet(out, self.parts / f"{key}.parquet")
                bar.update(1)

            run_stage_pool(
                a,
                lambda: actor_cls.remote(*args),
                lambda act, job: job.call(act),
                jobs,
                on_result,
                stage="analyze",
                setting="analysis",
                describe=lambda job: job.key,
                kept="; finished parts are kept and a re-run resumes",
            )

    def read(self, keys: list[str]) -> pd.DataFrame:
        frames = [read_parquet(self.parts / f"{k}.parquet") for k in keys]
        return (
            pd.concat(frames, ignore_index=True).drop(columns=stage.SCORED_BY) if frames else None
        )

    def clean(self, stamp: str) -> None:
        """Remove parts of earlier directions or tile picks."""
        current = {f"{k}.parquet" for k in self.keys} | {stamp}
        for p in self.parts.iterdir():
            if p.name not in current and not p.name.startswith("."):
                p.unlink()


def real_jobs(
    cfg: Config, runner: PartRunner, sel: pd.DataFrame, lat: np.ndarray
) -> tuple[list[RealJob], list[str]]:
    """One job per slide of the selection: its tiles' features, scores and fidelity."""
    fc = cfg.analysis.fidelity
    store = TileStore(cfg.workdir / "tiles")
    refs = reference_pick(sel, fc.reference_tiles, cfg.analysis.seed)
    ref_tiles = np.concatenate(
        [
            store.read_tiles(str(s), np.sort(g["index"].to_numpy()))
            for s, g in refs.groupby("slide_id", sort=True)
        ]
    )
    ref_slides = np.concatenate([[str(s)] * len(g) for s, g in refs.groupby("slide_id", sort=True)])
    ref_x = torch.from_numpy(ref_tiles).permute(0, 3, 1, 2).float().div(255)
    ref_obj = ray.put((ref_x, ref_slides))
    ref_ids = sorted(refs["tile_id"].astype(str))
    slide_fps = store.slide_fingerprints()
    jobs, keys = [], []
    for sid, rows in sel.groupby("slide_id", sort=True).indices.items():
        g = sel.iloc[rows]
        idx = g["index"].to_numpy()
        key = "real-" + content_key(
            str(sid),
            slide_fps.get(str(sid), ""),
            idx.tolist(),
            np.ascontiguousarray(lat[rows]),
            ref_ids,
            fc.identity_quantile,
        )
        keys.append(key)
        todo, old = runner.kept(key)
        if todo:
            jobs.append(
                RealJob(
                    key,
                    str(sid),
                    idx,
                    g["mpp"].to_numpy(np.float64),
                    lat[rows],
                    ref_obj,
                    fc.identity_quantile,
                    old,
                )
            )
    return jobs, keys


def probe_jobs(
    cfg: Config, runner: PartRunner, sel: pd.DataFrame
) -> tuple[list[ProbeJob], list[str]]:
    """One job per slide of the selection: its tiles under every configured probe. Stain
    normalisation targets each value of the first ``analysis.metadata`` column (its selected
    tiles' H and E statistics)."""
    pc, a = cfg.analysis.probes, cfg.analysis
    if not pc.enabled:
        return [], []
    store = TileStore(cfg.workdir / "tiles")
    col = next((c for c in a.metadata if c in sel.columns), None)
    groups = sel[col].astype(str) if col else pd.Series("all", index=sel.index)
    targets: dict[str, np.ndarray] = {}
    if cfg.modality == "histology" and pc.stain_normalise and col:
        for value, g in sel.groupby(groups, sort=True):
            g = g.sort_values(["slide_id", "index"]).groupby("slide_id").head(8)
            tiles = [
                store.read_tiles(str(s), gg["index"].to_numpy()) for s, gg in g.groupby("slide_id")
            ]
            targets[str(value)] = stain_stats(np.concatenate(tiles))
    probes = probe_list(pc.strengths(), cfg.modality, sorted(targets) if len(targets) > 1 else [])
    ref = ray.put(targets)
    slide_fps = store.slide_fingerprints()
    spec_fp = runner.scored_by
    jobs, keys = [], []
    for sid, rows in sel.groupby("slide_id", sort=True).indices.items():
        g = sel.iloc[rows]
        idx = g["index"].to_numpy()
        key = "probe-" + content_key(
            str(sid),
            slide_fps.get(str(sid), ""),
            idx.tolist(),
            [vars(p) for p in probes],
            {k: v.tolist() for k, v in targets.items()},
            spec_fp,
            a.seed,
        )
        keys.append(key)
        todo, _ = runner.kept(key)
        if todo:
            ids = pd.DataFrame(
                {
                    "tile_id": g["tile_id"].astype(str).to_numpy(),
                    "slide_id": str(sid),
                    "center": groups.iloc[rows].to_numpy(),
                }
            )
            jobs.append(
                ProbeJob(
                    key, str(sid), idx, g["mpp"].to_numpy(np.float64), ids, probes, ref, a.seed
                )
            )
    return jobs, keys


def shift_jobs(
    cfg: Config, runner: PartRunner, sets: list, tiles: pd.DataFrame, inputs: Inputs
) -> tuple[list[ShiftJob], list[str]]:
    """One job per (replicate, direction, slide batch of faithful tiles)."""
    a = cfg.analysis
    alphas = [float(x) for x in a.alphas]
    jobs, keys = [], []
    for ds in sets:
        inv, lat = inputs.inverted[ds.replicate]
        row_of = pd.Series(np.arange(len(inv)), index=inv["tile_id"].astype(str))
        have = tiles[tiles["tile_id"].astype(str).isin(row_of.index)]
        for d in ds.directions:
            vec, sigma = np.asarray(d.vector, np.float32), float(ds.sigmas[d.name])
            for rows in have.groupby("slide_id", sort=True).indices.values():
                for b in range(0, len(rows), a.batch_size):
                    t = have.iloc[rows[b : b + a.batch_size]][["tile_id", "slide_id", "mpp"]]
                    lt = lat[row_of[t["tile_id"].astype(str)].to_numpy()]
                    key = "shift-" + content_key(
                        ds.replicate,
                        d.name,
                        vec,
                        sigma,
                        alphas,
                        t["tile_id"].astype(str).tolist(),
                        np.ascontiguousarray(lt, np.float32),
                    )
                    keys.append(key)
                    todo, old = runner.kept(key)
                    if todo:
                        jobs.append(
                            ShiftJob(key, ds.replicate, d.name, vec, sigma, alphas, t, lt, old)
                        )
    return jobs, keys


def edit_jobs(
    cfg: Config, runner: PartRunner, sets: list, samples: Samples
) -> tuple[list[EditJob], list[str]]:
    """One job per replicate's classifier and conditional direction: the first
    ``N_EDIT_SAMPLES`` samples shifted along it (the editability gate's reference)."""
    alphas = [float(x) for x in cfg.analysis.alphas]
    w = np.ascontiguousarray(samples.w[:N_EDIT_SAMPLES], np.float32)
    jobs, keys = [], []
    for ds in sets:
        for d in ds.directions:
            if d.kind not in ("classifier", "conditional"):
                continue
            move = (
                ds.replicate,
                d.name,
                np.asarray(d.vector, np.float32),
                float(ds.sigmas[d.name]),
            )
            key = "edit-" + content_key(*move, alphas, w)
            keys.append(key)
            if runner.kept(key)[0]:  # another classifier's: scored again, nothing to keep
                jobs.append(EditJob(key, move, alphas, w))
    return jobs, keys


def direction_sets(
    cfg: Config, inputs: Inputs, samples: Samples
) -> tuple[list[DirectionSet], list[dict]]:
    """Each replicate's directions (``fit_set``), and the first's that were not estimable.
    Metadata directions: grouped by patient (else slide), within the label's strata when the
    cohort has the label column."""
    a = cfg.analysis
    clf = load_classifier(inputs.spec)
    spec = FitSpec(
        list(clf.class_names),
        clf.explained_class,
        a.metadata,
        a.fit,
        a.n_pcs,
        a.conditional,
        a.random_directions,
        a.n_permutations,
        a.seed,
    )
    label = cfg.classifier.train.label_column
    sets, skipped = [], []
    for r, (inv, lat) in enumerate(inputs.inverted):
        groups = inv["patient" if "patient" in inv.columns else "slide_id"].astype(str)
        strata = inv[label].astype(str).to_numpy() if label in inv.columns else None
        ds, sk = fit_set(samples.w, samples.logits, lat, inv, groups.to_numpy(), strata, spec, r)
        sets.append(ds)
        skipped = skipped if r else sk
    return sets, skipped


def fidelity_table(cfg: Config, sel: pd.DataFrame, real: pd.DataFrame) -> pd.DataFrame:
    """The selected tiles with their fidelity figures and the gate's decision."""
    fc = cfg.analysis.fidelity
    cols = ["tile_id", "slide_id", "index", "prob_real", "prob_recon"]
    fid = sel[cols].merge(
        real[["slide_id", "index", "ssim", "psnr", "ssim_reference"]],
        on=["slide_id", "index"],
        how="left",
    )
    return fidelity_gate(fid, fc.max_prob_change, fc.min_ssim, fc.identity_quantile is not None)


def fresh_parts(cfg: Config, inputs: Inputs, parts: WorkPath) -> str:
    """The parts folder, emptied when its parts were made with another generator, features
    or µm/px; returns the name of its fingerprint file (kept by ``PartRunner.clean``)."""
    stamp, fp = parts / "fingerprint.txt", parts_fingerprint(cfg, inputs)
    if parts.exists() and (not stamp.is_file() or stamp.read_text() != fp):
        remove_tree(parts)
    parts.mkdir(parents=True, exist_ok=True)
    stamp.write_text(fp)
    return stamp.name


def measure(cfg: Config, inputs: Inputs, runner: PartRunner, sample: SampleJob) -> dict[str, Any]:
    """Phase 1 (the samples unless cached; the selected tiles: features, fidelity, probes),
    the directions, phase 2 (the faithful tiles' shifts, the samples' for the editability
    gate) and every table of ``analysis/`` (``findings``)."""
    inv0, lat0 = inputs.inverted[0]
    sel = per_slide(inv0, cfg.analysis.tiles_per_slide, cfg.analysis.seed)
    samples = load_samples(sample)
    jobs, real_keys = real_jobs(cfg, runner, sel, lat0[sel.index.to_numpy()])
    pjobs, probe_keys = probe_jobs(cfg, runner, sel)
    runner.run([*([sample] if samples is None else []), *jobs, *pjobs], "analyze (tiles)")
    samples = load_samples(sample) if samples is None else samples
    if samples is None:
        raise RuntimeError(f"analyze: the samples were not saved to {sample.path}")
    real, probed = runner.read(real_keys), runner.read(probe_keys)
    fid = fidelity_table(cfg, sel, real)
    sets, skipped = direction_sets(cfg, inputs, samples)
    faithful = sel[fid["faithful"].to_numpy()]
    ejobs, edit_keys = edit_jobs(cfg, runner, sets, samples)
    jobs, shift_keys = shift_jobs(cfg, runner, sets, faithful, inputs)
    runner.run([*ejobs, *jobs], "analyze (shifts)")
    shifts, edits = runner.read(shift_keys), runner.read(edit_keys)
    slide_meta = inv0.drop_duplicates("slide_id").set_index("slide_id")
    tables = findings(
        cfg.analysis,
        cfg.modality,
        sets,
        skipped,
        samples,
        real,
        fid,
        shifts,
        inputs.features,
        slide_meta,
        probed,
        edits if edits is not None else pd.DataFrame(columns=EDIT_COLUMNS),
    )
    s = runner.summary
    s.directions = [d.name for d in sets[0].directions if d.kind != "random"]
    s.not_estimable = skipped
    v = tables["verdicts"]
    s.verdicts = dict(zip(v["direction"], v["verdict"], strict=True))
    s.n_tiles, s.n_faithful = len(sel), int(fid["faithful"].sum())
    s.n_frames = 0 if shifts is None else len(shifts)
    return tables


def run_analyze(cfg: Config, progress: bool | None = None) -> AnalysisSummary:
    """See the module docstring. Raises ``AnalysisInputError`` before any work."""
    t0 = time.perf_counter()
    inputs = load_inputs(cfg)
    out = cfg.workdir / OUT
    fp = fingerprint(cfg, inputs)
    summary = AnalysisSummary(out=out)
    stamp = out / "analysis.json"
    if stamp.is_file() and json.loads(stamp.read_text()).get("fingerprint") == fp:
        summary.skipped = True
        return summary
    progress = sys.stderr.isatty() if progress is None else progress
    prov = provenance(cfg.section_hash("analysis", "classifier"), fingerprint=fp)
    with workdir_lock(cfg.workdir):  # as predict and invert: one writing run per workdir
        stamp.unlink(missing_ok=True)
        keep = fresh_parts(cfg, inputs, out / "parts")
        ensure_ray(cfg.ray)
        runner = PartRunner(cfg, inputs, out / "parts", summary, progress)
        tables = measure(cfg, inputs, runner, sample_job(cfg, inputs, out / "samples.npz"))
        runner.clean(keep)
        for name, table in tables.items():
            if isinstance(table, pd.DataFrame):
                write_parquet(table, out / f"{name}.parquet", prov)
        atomic_write_json(out / "generator.json", {**tables["generator"], **prov})
        summary.seconds = time.perf_counter() - t0
        record = {
            "fingerprint": fp,
            "directions": summary.directions,
            "verdicts": summary.verdicts,
            "not_estimable": summary.not_estimable,
            "n_tiles": summary.n_tiles,
            "n_faithful": summary.n_faithful,
            "seconds": round(summary.seconds, 1),
            **prov,
        }
        atomic_write_json(stamp, record)
    return summary
