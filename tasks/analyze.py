"""``stylepath analyze``: directions, latent shifts and feature effects → cohort parquet reports.

1. Directions (a Ray task): the classifier's, fitted on synthesised samples; metadata ones,
   fitted on the inverted real tiles' latents; optional principal ones; and the classifier's
   with the metadata directions projected out (conditional).
2. Shifts (a Ray actor pool; each actor loads G and the classifier once): every selected
   inverted tile moved along every direction over the α grid, synthesised, scored, measured.
   Results are written as part files as they complete, keyed by their inputs (direction,
   tiles, latents): a re-run — also one with new slides — computes only the missing parts.
   Images and features do not depend on the classifier, so a new classifier re-scores the
   parts whose direction it leaves unchanged (metadata, principal) instead of measuring
   them again (``scored_by``); its own directions get new parts.
3. Reports under ``workdir/analysis/``: ``directions.parquet``, ``shifts.parquet``,
   ``feature_effects.parquet``, ``cohort_bias.parquet`` (each with provenance metadata).
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import ray
import torch
from tqdm import tqdm

from pipeline.classifier.contract import ClassifierSpec, load_classifier, resolve_spec
from pipeline.config import AnalysisConfig, Config
from pipeline.directions import (
    Direction,
    DirectionFitError,
    classifier_directions,
    latent_sigma,
    metadata_directions,
    principal_directions,
    project_out,
    random_cosine_null,
    shift_latents,
)
from pipeline.features import compute_features, feature_names, unwrap_circular
from pipeline.gan.generator import load_generator
from pipeline.io.files import atomic_write, atomic_write_json, files_sha256, workdir_lock
from pipeline.io.inversion_store import InversionStore
from pipeline.io.parquet import read_parquet, write_parquet
from pipeline.io.paths import WorkPath, remove_tree
from pipeline.io.tile_store import TileStore
from pipeline.provenance import provenance
from pipeline.reports.bias import conditional_rows, cosine_rows
from pipeline.reports.effects import feature_effects, group_effects, per_tile_slopes
from tasks.invert import SCORED_BY, generator_folder
from tasks.pool import ResilientPool, exit_once, fault_marker
from tasks.runtime import ensure_ray

OUT = "analysis"
PARTS_VERSION = 3  # bump when a part's content changes for the same key


class AnalysisInputError(ValueError):
    """Missing inputs (inversion, classifier) or a config the cohort cannot satisfy."""


@dataclass
class AnalysisSummary:
    directions: list[str] = field(default_factory=list)
    not_estimable: list[dict] = field(default_factory=list)
    n_tiles: int = 0
    n_frames: int = 0
    n_parts_reused: int = 0  # shift/real parts kept from earlier runs (same inputs)
    n_parts_rescored: int = 0  # of those, re-scored by a new classifier (features kept)
    skipped: bool = False
    seconds: float = 0.0
    out: Path | None = None


# -- inputs ------------------------------------------------------------------------------------
def load_inverted(cfg: Config) -> tuple[pd.DataFrame, np.ndarray]:
    """Successfully inverted tiles (with their manifest metadata) and their latents
    [n, L, D] (L = 1 for W)."""
    store = InversionStore(cfg.workdir / "inversion")
    if not store.table.is_file() or not store.latents_path.exists():
        raise AnalysisInputError(f"{store.root}: no inversion results; run `stylepath invert`")
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


def select_tiles(inv: pd.DataFrame, per_slide: int, seed: int) -> pd.DataFrame:
    """Up to ``per_slide`` inverted tiles per slide, drawn reproducibly and per slide (a new
    slide leaves the other slides' picks, and so their cached shifts, alone)."""
    parts = []
    for sid, g in inv.groupby("slide_id", sort=True):
        rng = np.random.default_rng([seed, zlib.crc32(str(sid).encode())])
        pick = np.sort(rng.choice(len(g), min(per_slide, len(g)), replace=False))
        parts.append(g.iloc[pick])
    return pd.concat(parts)


# -- Ray side ----------------------------------------------------------------------------------
def _sample_and_score(gen_dir: WorkPath, spec: ClassifierSpec, n: int, seed: int,
                      threads: int) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Latents w of ``n`` samples and the classifier's logits on their images."""
    torch.set_num_threads(max(1, threads))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    gen = load_generator(gen_dir)
    gen.G.to(device)
    clf = load_classifier(spec, device)
    g = torch.Generator().manual_seed(seed)
    ws, logits = [], []
    with torch.no_grad():
        for a in range(0, n, 256):
            z = torch.randn(min(256, n - a), gen.z_dim, generator=g).to(device)
            w = gen.mapping(z)
            logits.append(clf(gen.synthesis(w)).reshape(len(w), -1).float().cpu().numpy())
            ws.append(w.cpu().numpy())
    return np.concatenate(ws), np.concatenate(logits)


class Shifter:
    """Synthesises, scores and measures shifted latents; loads G and the classifier once."""

    def __init__(self, gen_dir: WorkPath, spec: ClassifierSpec, modality: str,
                 features: list[str], tiles_root: WorkPath, acfg: AnalysisConfig,
                 fault: str | None = None) -> None:  # fmt: skip
        torch.set_num_threads(max(1, int(acfg.num_cpus)))
        self.device = "cuda" if acfg.num_gpus > 0 and torch.cuda.is_available() else "cpu"
        self.gen = load_generator(gen_dir)
        self.gen.G.to(self.device)
        self.clf = load_classifier(spec, self.device)
        self.scored_by = spec.fingerprint()
        self.modality, self.features = modality, features
        self.store = TileStore(tiles_root)
        self.fault = fault

    def ready(self) -> bool:
        """Answers once G and the classifier are loaded (work goes only to ready actors)."""
        return True

    def _score(self, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        with torch.no_grad():
            z = self.clf(images)
        return self.clf.score(z).float().cpu().numpy(), self.clf.prob(z).float().cpu().numpy()

    def _measured(self, images: np.ndarray, mpp: np.ndarray, ids: pd.DataFrame,
                  kept: pd.DataFrame | None) -> pd.DataFrame:  # fmt: skip
        """The features of ``images`` (uint8 [N, H, W, C]), or, re-scoring, ``kept``'s: an
        earlier part of the same inputs, whose rows must be ``ids``'s."""
        if kept is None:
            return compute_features(images, mpp, self.features, modality=self.modality)
        same = kept[list(ids.columns)].reset_index(drop=True)
        if not same.equals(ids.reset_index(drop=True)):
            raise ValueError("re-scored part's rows do not match its inputs")
        return kept[self.features].reset_index(drop=True)

    def shift(self, key: str, direction: str, vector: np.ndarray, sigma: float,
              alphas: list[float], tiles: pd.DataFrame, latents: np.ndarray,
              kept: pd.DataFrame | None = None) -> tuple:  # fmt: skip
        """One part: ``tiles`` (tile_id, slide_id, mpp) × α → rows with prediction and features
        (each frame measured at its source tile's µm/px). With ``kept`` (this part from
        another classifier) the frames are only scored again."""
        exit_once(self.fault)  # the test hook: die mid-job, once
        shifted = shift_latents(latents, vector, np.asarray(alphas, np.float32), sigma)
        n, a = shifted.shape[:2]
        w = torch.from_numpy(shifted.reshape(n * a, *shifted.shape[2:])).to(self.device)
        with torch.no_grad():
            img = self.gen.synthesis(w if w.shape[1] > 1 else w[:, 0])
        logit, prob = self._score(img)
        u8 = (img * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
        mpp = np.repeat(tiles["mpp"].to_numpy(np.float64), a)
        ids = pd.DataFrame({
            "tile_id": np.repeat(tiles["tile_id"].to_numpy(), a),
            "slide_id": np.repeat(tiles["slide_id"].to_numpy(), a),
            "direction": direction, "alpha": np.tile(np.asarray(alphas, np.float32), n),
        })  # fmt: skip
        feats = self._measured(u8, mpp, ids, kept)
        rows = ids.assign(logit=logit, prediction=prob, **{SCORED_BY: self.scored_by})
        return key, pd.concat([rows, feats], axis=1)

    def real(self, key: str, slide_id: str, indices: np.ndarray, mpp: np.ndarray,
             kept: pd.DataFrame | None = None) -> tuple:  # fmt: skip
        """Features (and predictions) of real tiles, for the features' SD over real tiles;
        with ``kept``, as ``shift``."""
        exit_once(self.fault)
        order = np.argsort(indices)
        tiles = self.store.read_tiles(slide_id, indices[order])
        mpp = np.asarray(mpp, np.float64)[order]
        x = torch.from_numpy(tiles).permute(0, 3, 1, 2).float().div(255).to(self.device)
        logit, prob = self._score(x)
        ids = pd.DataFrame({"slide_id": slide_id, "index": np.sort(indices)})
        feats = self._measured(tiles, mpp, ids, kept)
        rows = ids.assign(logit=logit, prediction=prob, **{SCORED_BY: self.scored_by})
        return key, pd.concat([rows, feats], axis=1)


# -- driver ------------------------------------------------------------------------------------
def fingerprint(cfg: Config, gen_dir: WorkPath, spec: ClassifierSpec) -> str:
    files = files_sha256([gen_dir / "generator.safetensors",
                          InversionStore(cfg.workdir / "inversion").table])  # fmt: skip
    parts = [files, spec.fingerprint(), cfg.dump()["analysis"], cfg.tiling.mpp]
    if cfg.modality != "histology":
        parts.append(cfg.modality)
    blob = json.dumps(parts, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def parts_fingerprint(cfg: Config, gen_dir: WorkPath) -> str:
    """What every part's images and features depend on (generator, settings) — not which
    tiles were inverted (part keys name their own inputs: direction, tiles, latents), nor
    the classifier (each part's rows name the one that scored them)."""
    parts = [PARTS_VERSION, files_sha256([gen_dir / "generator.safetensors"]),
             cfg.dump()["analysis"], cfg.tiling.mpp]  # fmt: skip
    if cfg.modality != "histology":
        parts.append(cfg.modality)
    blob = json.dumps(parts, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _key(*items: object) -> str:
    h = hashlib.sha256()
    for it in items:
        h.update(it.tobytes() if isinstance(it, np.ndarray) else json.dumps(it).encode())
        h.update(b"|")
    return h.hexdigest()[:20]


def sampled_latents(cfg: Config, gen_dir: WorkPath, spec: ClassifierSpec, cache: WorkPath
                    ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """``n_samples`` latents and their logits (a Ray task), cached in ``cache`` by generator,
    classifier, count and seed."""
    a = cfg.analysis
    key = _key(files_sha256([gen_dir / "generator.safetensors"]), spec.fingerprint(),
               a.n_samples, a.seed)  # fmt: skip
    try:
        with cache.open("rb") as fh, np.load(fh) as z:
            if str(z["key"]) == key:
                return z["w"], z["logits"]
    except (FileNotFoundError, KeyError, ValueError, OSError):
        pass
    task = ray.remote(_sample_and_score).options(num_cpus=a.num_cpus, num_gpus=a.num_gpus)
    w, logits = ray.get(task.remote(gen_dir, spec, a.n_samples, a.seed, int(a.num_cpus)))

    def save(tmp: Path) -> None:
        with open(tmp, "wb") as fh:  # np.savez(path) would append ".npz" to the temp name
            np.savez(fh, key=np.array(key), w=w, logits=logits)

    atomic_write(cache, save)
    return w, logits


def fit_directions(
    cfg: Config, gen_dir: WorkPath, spec: ClassifierSpec, inv: pd.DataFrame, latents: np.ndarray
) -> tuple[list[Direction], list[dict], np.ndarray]:
    """All directions (with what could not be estimated) and the sampled latents."""
    a = cfg.analysis
    w, logits = sampled_latents(cfg, gen_dir, spec, cfg.workdir / OUT / "samples.npz")
    clf = load_classifier(spec)
    try:
        names = list(clf.class_names)
        dirs, skipped = classifier_directions(
            w, logits, names, clf.explained_class, method=a.fit, seed=a.seed
        )
    except DirectionFitError as exc:  # e.g. one class on every sample: report, go on
        dirs, skipped = [], [{"name": "classifier", "reason": str(exc)}]
    meta_dirs, meta_skipped = metadata_directions(latents.mean(axis=1), inv, a.metadata,
                                                  seed=a.seed)  # fmt: skip
    dirs += meta_dirs
    skipped += meta_skipped
    if a.n_pcs:
        dirs += principal_directions(w, a.n_pcs)
    if a.conditional and meta_dirs:
        for d in [d for d in dirs if d.kind == "classifier"]:
            vec = project_out(d.vector, [m.vector for m in meta_dirs])
            dirs.append(
                Direction(
                    f"{d.name}|without:meta",
                    "conditional",
                    vec,
                    {"original": d.name, "removed": [m.name for m in meta_dirs]},
                )
            )
    return dirs, skipped, w


def directions_table(dirs: list[Direction], skipped: list[dict], sigmas: dict[str, float]
                     ) -> pd.DataFrame:  # fmt: skip
    rows = [{"name": d.name, "kind": d.kind, "estimable": True, "reason": "",
             "vector": d.vector.astype(np.float32).tolist(), "sigma": sigmas[d.name],
             "auc": d.metrics.get("auc"), "accuracy": d.metrics.get("accuracy"),
             "metrics": json.dumps(d.metrics, default=str)} for d in dirs]  # fmt: skip
    rows += [{"name": s["name"], "kind": s["name"].split(":")[0], "estimable": False,
              "reason": s["reason"], "vector": None, "sigma": None, "auc": None,
              "accuracy": None, "metrics": "{}"} for s in skipped]  # fmt: skip
    return pd.DataFrame(rows)


def run_analyze(cfg: Config, progress: bool | None = None) -> AnalysisSummary:
    """See the module docstring. Raises ``AnalysisInputError`` before any work."""
    t0 = time.perf_counter()
    a = cfg.analysis
    gen_dir = generator_folder(cfg)
    if not (gen_dir / "generator.safetensors").is_file():
        raise AnalysisInputError(f"{gen_dir}: no generator (train-gan, or inversion.generator)")
    inv, latents = load_inverted(cfg)
    missing = [c for c in a.metadata if c not in inv.columns]
    if missing:
        raise AnalysisInputError(f"analysis.metadata: cohort has no column(s) {missing}")
    registered = feature_names(cfg.modality)
    features = a.features or registered
    unknown = [f for f in features if f not in registered]
    if unknown:
        raise AnalysisInputError(f"analysis.features: unknown {unknown} for modality "
                                 f"{cfg.modality} (registered: {registered})")  # fmt: skip
    tile_size, channels = TileStore(cfg.workdir / "tiles").tile_shape()
    spec = resolve_spec(cfg.classifier, cfg.workdir, tile_size, channels)
    load_classifier(spec)  # checked before any work
    out = cfg.workdir / OUT
    fp = fingerprint(cfg, gen_dir, spec)
    summary = AnalysisSummary(out=out)
    stamp = out / "analysis.json"
    if stamp.is_file() and json.loads(stamp.read_text()).get("fingerprint") == fp:
        summary.skipped = True
        return summary
    if progress is None:
        progress = sys.stderr.isatty()
    prov = provenance(cfg.section_hash("analysis", "classifier"), fingerprint=fp)
    with workdir_lock(out):
        stamp.unlink(missing_ok=True)
        parts = out / "parts"
        part_stamp = parts / "fingerprint.txt"
        part_fp = parts_fingerprint(cfg, gen_dir)
        if parts.exists() and (not part_stamp.is_file() or part_stamp.read_text() != part_fp):
            remove_tree(parts)  # parts of another generator or configuration
        parts.mkdir(parents=True, exist_ok=True)
        part_stamp.write_text(part_fp)
        ensure_ray(cfg.ray)
        dirs, skipped, w_samples = fit_directions(cfg, gen_dir, spec, inv, latents)
        sigmas = {d.name: latent_sigma(w_samples, d.vector) for d in dirs}
        write_parquet(directions_table(dirs, skipped, sigmas), out / "directions.parquet", prov)

        sel = select_tiles(inv, a.tiles_per_slide, a.seed)
        lat_sel = latents[sel.index.to_numpy()]
        slide_fps = TileStore(cfg.workdir / "tiles").slide_fingerprints()
        # Part keys name their inputs, so a new slide adds parts and leaves the others valid;
        # a direction re-fitted on the grown cohort (metadata) gets new parts for every tile.
        jobs, keys = [], {"shift": [], "real": []}
        scored_by = spec.fingerprint()

        def kept(key: str) -> tuple[bool, pd.DataFrame | None]:
            """(part to (re)do?, its rows to re-score): a part another classifier scored
            keeps its features."""
            path = parts / f"{key}.parquet"
            if not path.is_file():
                return True, None
            if (read_parquet(path, columns=[SCORED_BY])[SCORED_BY] == scored_by).all():
                return False, None
            summary.n_parts_rescored += 1
            return True, read_parquet(path)

        alphas = [float(x) for x in a.alphas]
        for d in dirs:
            vec = np.asarray(d.vector, np.float32)
            for rows in sel.groupby("slide_id", sort=True).indices.values():
                for b in range(0, len(rows), a.batch_size):
                    r = rows[b : b + a.batch_size]
                    tiles, lat = sel.iloc[r][["tile_id", "slide_id", "mpp"]], lat_sel[r]
                    key = "shift-" + _key(d.name, vec, float(sigmas[d.name]), alphas,
                                          tiles["tile_id"].astype(str).tolist(),
                                          np.ascontiguousarray(lat, np.float32))  # fmt: skip
                    keys["shift"].append(key)
                    todo, old = kept(key)
                    if todo:
                        jobs.append(("shift", key, d.name, vec, sigmas[d.name], alphas, tiles,
                                     lat, old))  # fmt: skip
        for sid, g in sel.groupby("slide_id", sort=True):
            idx = np.sort(g["index"].to_numpy())
            key = "real-" + _key(str(sid), slide_fps.get(str(sid), ""), idx.tolist())
            keys["real"].append(key)
            todo, old = kept(key)
            if todo:
                mpp = g["mpp"].to_numpy(np.float64)[np.argsort(g["index"].to_numpy())]
                jobs.append(("real", key, str(sid), idx, mpp, old))
        summary.n_parts_reused = (len(keys["shift"]) + len(keys["real"]) - len(jobs)
                                  + summary.n_parts_rescored)  # fmt: skip
        if jobs:
            actor_cls = ray.remote(Shifter).options(num_cpus=a.num_cpus, num_gpus=a.num_gpus)
            fault = fault_marker()
            bar = tqdm(total=len(jobs), unit="part", desc="analyze", disable=not progress,
                       file=sys.stderr)  # fmt: skip

            def on_result(job: tuple, result: tuple[str, pd.DataFrame]) -> None:
                key, df = result
                write_parquet(df, parts / f"{key}.parquet")  # committed: a re-run skips it
                bar.update(1)

            # Ray's own restarts and retries are off: ResilientPool replaces dead actors on
            # live nodes itself (a restart pinned to a lost node would wait forever).
            pool: ResilientPool[tuple] = ResilientPool(
                make_actor=lambda: actor_cls.remote(gen_dir, spec, cfg.modality, features,
                                                    cfg.workdir / "tiles", a, fault),
                call=lambda act, job: (act.shift if job[0] == "shift" else act.real
                                       ).remote(*job[1:]),
                concurrency=min(a.concurrency, len(jobs)), timeout_s=a.task_timeout_s,
                max_replacements=a.max_restarts, max_job_failures=a.max_task_retries + 1,
            )  # fmt: skip
            try:
                pool.run_all(jobs, on_result, stage="analyze", describe=lambda job: str(job[1]),
                             timeout_setting="analysis.task_timeout_s",
                             kept="; finished parts are kept and a re-run resumes")  # fmt: skip
            finally:
                bar.close()
        current = {f"{k}.parquet" for k in keys["shift"] + keys["real"]} | {part_stamp.name}
        for p in parts.iterdir():  # parts of earlier directions or tile picks
            if p.name not in current and not p.name.startswith("."):
                p.unlink()

        shifts = pd.concat([read_parquet(parts / f"{k}.parquet") for k in keys["shift"]],
                           ignore_index=True).drop(columns=SCORED_BY)  # fmt: skip
        real = pd.concat([read_parquet(parts / f"{k}.parquet") for k in keys["real"]],
                         ignore_index=True).drop(columns=SCORED_BY)  # fmt: skip
        write_parquet(shifts, out / "shifts.parquet", prov)
        # circular features (hue) as angles about the real tiles' mean, not cut at [0, 1)
        real = unwrap_circular(real, cfg.modality)
        shifts = unwrap_circular(shifts, cfg.modality, ref=real)
        real_sd = real[features].std()
        slopes = per_tile_slopes(shifts, features)
        effects = feature_effects(slopes, real_sd, n_boot=a.n_boot, seed=a.seed)
        per_logit = per_tile_slopes(shifts, features, x="logit")
        per_logit = per_logit.assign(std_slope=per_logit["slope"] / per_logit["feature"]
                                     .map(real_sd)).groupby(["direction", "feature"])[
            "std_slope"].mean().rename("effect_per_logit").reset_index()  # fmt: skip
        effects = effects.merge(per_logit, on=["direction", "feature"], how="left")
        write_parquet(effects, out / "feature_effects.parquet", prov)

        slide_meta = inv.drop_duplicates("slide_id").set_index("slide_id")
        bias = [group_effects(slopes, real_sd, slide_meta[c], c, a.min_slides).assign(
            section="group_effect") for c in a.metadata]  # fmt: skip
        bias.append(cosine_rows(dirs, random_cosine_null(w_samples.shape[1], seed=a.seed)))
        bias.append(conditional_rows(shifts, {d.name: d.metrics["original"] for d in dirs
                                              if d.kind == "conditional"}))  # fmt: skip
        write_parquet(pd.concat(bias, ignore_index=True), out / "cohort_bias.parquet", prov)

        summary.directions = [d.name for d in dirs]
        summary.not_estimable = skipped
        summary.n_tiles = len(sel)
        summary.n_frames = len(shifts)
        summary.seconds = time.perf_counter() - t0
        atomic_write_json(stamp, {"fingerprint": fp, "directions": summary.directions,
                                  "not_estimable": skipped, "n_tiles": len(sel),
                                  "seconds": round(summary.seconds, 1), **prov})  # fmt: skip
    return summary
