"""``stylepath run``: the whole cohort job — tile → train-gan → train-classifier → predict →
invert → analyze → report — with each stage skipped when its inputs are unchanged.

Each stage has a fingerprint of its inputs (input file hashes, its config sections, the
stage's code version). Stages that track finer-grained work themselves (tiling and
prediction per slide, inversion per tile, analysis per part keyed by its inputs) always run
and do only what changed — for new slides: tile, score, invert and shift only their tiles,
then re-fit the cohort-level directions and re-aggregate. The others are skipped when their
stamp in ``workdir/runs/stamps/<stage>.json`` matches; a trained model (GAN, classifier)
also records the slides it was trained on and stays valid while those are unchanged. Every
run writes ``workdir/runs/<timestamp>/manifest.json`` (stages run or skipped and why,
fingerprints, timings, package versions, the Ray cluster's resources) and the resolved
``config.yaml``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from pipeline.config import Config
from pipeline.io.files import atomic_write_json, atomic_write_yaml, files_sha256
from pipeline.io.paths import WorkPath, remove_file, remove_tree, same_location
from pipeline.io.tile_store import TileStore
from pipeline.provenance import code_version, content_key

STAGES = ["tile", "train-gan", "train-classifier", "predict", "invert", "analyze", "report"]
STAGE_VERSION = {"train-gan": 2, "train-classifier": 2, "report": 1}
PACKAGES = [
    "stylepath",
    "torch",
    "ray",
    "zarr",
    "numpy",
    "pandas",
    "pyarrow",
    "openslide-python",
    "scikit-image",
    "scikit-learn",
]


@dataclass
class StageResult:
    name: str
    status: str  # ran | skipped | failed
    reason: str = ""
    seconds: float = 0.0
    fingerprint: str = ""
    summary: dict[str, Any] = field(default_factory=dict)


TRAINED_ON_SLIDES = {"train-gan", "train-classifier"}


def stage_fingerprint(cfg: Config, stage: str) -> str:
    """Inputs of the stages that keep no finer-grained record of their own work. The training
    stages' tiles are tracked per slide in their stamps instead (``_is_fresh``)."""
    if stage == "train-gan":
        parts = [cfg.section_hash("gan")]
    elif stage == "train-classifier":
        parts = [cfg.section_hash("classifier")]
    elif stage == "report":
        parts = [
            files_sha256(
                [cfg.workdir / "analysis" / "analysis.json", cfg.workdir / "predictions.parquet"],
                missing_ok=True,
            )
        ]
    else:
        return ""
    return content_key(stage, STAGE_VERSION.get(stage, 0), *parts, size=16)


def _stamp(cfg: Config, stage: str) -> WorkPath:
    return cfg.workdir / "runs" / "stamps" / f"{stage}.json"


def _slides(cfg: Config) -> dict[str, str]:
    return TileStore(cfg.workdir / "tiles").slide_fingerprints()


def _is_fresh(cfg: Config, stage: str, fp: str, outputs: list[WorkPath]) -> str | None:
    """Why the stage can be skipped, or None when it must run. A trained model stays valid
    while the slides it was trained on are unchanged: new slides are analysed with it, not
    trained on (``--force STAGE`` retrains)."""
    try:
        stamp = json.loads(_stamp(cfg, stage).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    if stamp.get("fingerprint") != fp or not all(p.exists() for p in outputs):
        return None
    if stage not in TRAINED_ON_SLIDES:
        return "inputs unchanged"
    trained, now = stamp.get("slides"), _slides(cfg)
    if trained is None or any(now.get(s) != f for s, f in trained.items()):
        return None  # a slide it was trained on changed or is gone
    new = len(set(now) - set(trained))
    return "inputs unchanged" + (
        f"; {new} new slide(s) not trained on (--force {stage} retrains)" if new else ""
    )


def _outputs(cfg: Config, stage: str) -> list[WorkPath]:
    w = cfg.workdir
    return {
        "train-gan": [w / "gan" / "generator.safetensors"],
        "train-classifier": [w / "classifier" / "model.pt"],
        "report": [w / "report" / "index.html"],
    }.get(stage, [])


def downstream(stage: str) -> list[str]:
    """``stage`` and every stage after it (what ``--force STAGE`` re-runs)."""
    return STAGES[STAGES.index(stage) :]


def _uses_shipped_generator(cfg: Config) -> bool:
    g = getattr(getattr(cfg, "inversion", None), "generator", None)
    return bool(g) and not same_location(g, cfg.workdir / "gan")


def _tile(cfg: Config) -> dict[str, Any]:
    from tasks.tile import run_tiling

    s = run_tiling(cfg)
    nothing_new = s.n_skipped == s.n_slides and not s.manifests_written
    return {
        "slides": s.n_slides,
        "ok": s.n_ok,
        "failed": s.n_failed,
        "tiles": s.n_tiles,
        "tiles_read": s.n_tiles_read,
        "failures": s.failed,
        "new_or_changed_slides": s.n_slides - s.n_skipped,
        "skipped": nothing_new,
    }


def _train_gan(cfg: Config) -> dict[str, Any]:
    from tasks.train_gan import run_train_gan

    return {"kimg": run_train_gan(cfg)["kimg"]}


def _train_classifier(cfg: Config) -> dict[str, Any]:
    from tasks.train_classifier import run_train_classifier

    last = run_train_classifier(cfg)["metrics"].iloc[-1]
    return {
        "val_auc_tile": float(last["val_auc_tile"]),
        "val_auc_slide": float(last["val_auc_slide"]),
    }


def _predict(cfg: Config) -> dict[str, Any]:
    from tasks.predict import run_predict

    s = run_predict(cfg)
    return {
        "tiles": s.n_tiles,
        "reused": s.n_reused,
        "skipped": s.skipped,
        "tiles_per_s": s.tiles_per_s,
    }


def _invert(cfg: Config) -> dict[str, Any]:
    from tasks.invert import run_invert

    s = run_invert(cfg)
    out = {k: v for k, v in vars(s).items() if isinstance(v, int | float | str | bool)}
    out["skipped"] = (
        s.n_inverted == 0 and s.n_rescored == 0 and s.n_skipped == s.n_selected
    )  # all were done
    if "replicates" in s.extras:
        out["replicates"] = s.extras["replicates"]
    return out


def _analyze(cfg: Config) -> dict[str, Any]:
    from tasks.analyze import run_analyze

    s = run_analyze(cfg)
    return {
        "skipped": s.skipped,
        "directions": s.directions,
        "verdicts": s.verdicts,
        "tiles": s.n_tiles,
        "faithful_tiles": s.n_faithful,
        "parts_reused": s.n_parts_reused,
        "parts_rescored": s.n_parts_rescored,
        "not_estimable": s.not_estimable,
    }


def _report(cfg: Config) -> dict[str, Any]:
    from tasks.report import run_report

    return {"path": str(run_report(cfg))}


# Each stage's action: runs it, returns its summary for the run manifest.
ACTIONS: dict[str, Callable[[Config], dict[str, Any]]] = {
    "tile": _tile,
    "train-gan": _train_gan,
    "train-classifier": _train_classifier,
    "predict": _predict,
    "invert": _invert,
    "analyze": _analyze,
    "report": _report,
}


def _force(cfg: Config, stages: list[str]) -> None:
    """Drop the records that let these stages skip (their outputs are rewritten)."""
    w = cfg.workdir
    inv = w / "inversion"
    replicas = [inv / f"replicate-{r}" for r in range(1, cfg.inversion.replicates)]
    marks = {
        "predict": [w / "predictions.json"],
        "analyze": [w / "analysis" / "analysis.json"],
        "invert": [inv / "parts", inv / "inversion.parquet", *replicas],
    }
    for s in stages:
        remove_file(_stamp(cfg, s))
        for p in marks.get(s, []):
            if p.is_dir():
                remove_tree(p)  # the encoder cache stays: it depends on the generator only
            else:
                remove_file(p)


def _versions() -> dict[str, str]:
    out = {}
    for p in PACKAGES:
        try:
            out[p] = version(p)
        except PackageNotFoundError:
            out[p] = "not installed"
    out["stylepath_code"] = code_version()
    return out


def _elsewhere(cfg: Config, name: str) -> str | None:
    """Why ``name`` does not run at all: its output comes from the config, or None."""
    if name == "train-gan" and _uses_shipped_generator(cfg):
        return f"using the exported generator {cfg.inversion.generator}"
    if name == "train-classifier" and cfg.classifier.model:
        return f"using the configured classifier {cfg.classifier.model}"
    return None


def _run_stage(
    cfg: Config, name: str, started: datetime
) -> tuple[StageResult, BaseException | None]:
    """One stage: skipped, ran (its stamp written) or failed (the error returned)."""
    t0 = time.perf_counter()
    why = _elsewhere(cfg, name)
    if why:
        return StageResult(name, "skipped", why), None
    fp = stage_fingerprint(cfg, name)
    why = _is_fresh(cfg, name, fp, _outputs(cfg, name)) if fp else None
    if why:
        return StageResult(name, "skipped", why, fingerprint=fp), None
    try:
        summary = ACTIONS[name](cfg)
    except BaseException as exc:  # noqa: BLE001 - recorded, then re-raised
        reason = f"{type(exc).__name__}: {exc}"
        return StageResult(name, "failed", reason, time.perf_counter() - t0, fp), exc
    status = "skipped" if summary.get("skipped") else "ran"
    reason = "inputs unchanged (stage's own record)" if status == "skipped" else ""
    if fp:
        stamp = {"fingerprint": fp, "finished": str(started)}
        if name in TRAINED_ON_SLIDES:
            stamp["slides"] = _slides(cfg)
        atomic_write_json(_stamp(cfg, name), stamp)
    return StageResult(name, status, reason, time.perf_counter() - t0, fp, summary), None


def _ray_resources() -> dict[str, float]:
    """The Ray cluster's resources, when Ray is up (empty otherwise)."""
    try:
        import ray

        if ray.is_initialized():
            return {
                k: float(v) for k, v in ray.cluster_resources().items() if not k.startswith("node:")
            }
    except Exception:  # noqa: BLE001 - the manifest must be written regardless
        pass
    return {}


def run_all(cfg: Config, force: str | None = None, until: str | None = None) -> WorkPath:
    """Run the job; returns the run's ``manifest.json``. A failing stage stops the run (its
    error is in the manifest) and is raised after the manifest is written."""
    started = datetime.now(UTC)
    run_dir = cfg.workdir / "runs" / started.strftime("%Y%m%dT%H%M%S%fZ")
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_yaml(run_dir / "config.yaml", cfg.dump())
    if force:
        _force(cfg, downstream(force))
    stages = STAGES[: STAGES.index(until) + 1] if until else STAGES
    results: list[StageResult] = []
    error: BaseException | None = None
    for name in stages:
        result, error = _run_stage(cfg, name, started)
        results.append(result)
        if error is not None:
            break
    manifest = {
        "started": started.isoformat(timespec="seconds"),
        "seconds": round(sum(r.seconds for r in results), 2),
        "config_hash": content_key(cfg.dump(), size=16),
        "force": force,
        "stages": [vars(r) for r in results],
        "versions": _versions(),
        "ray_resources": _ray_resources(),
    }
    atomic_write_json(run_dir / "manifest.json", json.loads(json.dumps(manifest, default=str)))
    if error is not None:
        raise error
    return run_dir / "manifest.json"
