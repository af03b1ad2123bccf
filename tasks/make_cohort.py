"""``stylepath make-cohort``: render the synthetic H&E demo cohort with one Ray task per slide."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import ray
from tqdm import tqdm

from pipeline.config import RayConfig
from pipeline.io.files import atomic_write, atomic_write_json
from pipeline.io.parquet import read_table
from pipeline.io.slide_writer import write_pyramid_tiff
from pipeline.synthetic import plan_cohort, render_slide
from pipeline.synthetic.cells import plan_cells_cohort, render_cells
from pipeline.synthetic.marks import add_ink
from tasks.runtime import ensure_ray

# Bump when rendering changes pixels, so cached demo cohorts are rebuilt.
GENERATOR_VERSION = 2


RENDERERS = ("he", "cells")


@ray.remote
def _write_slide(spec: dict[str, Any], path: str) -> str:
    mpp = float(spec["mpp"])
    rgb = render_cells(spec) if spec.get("renderer") == "cells" else render_slide(spec)
    if spec.get("ink"):
        rgb = add_ink(rgb, int(spec["slide_seed"]) + 1, mpp)
    write_pyramid_tiff(Path(path), rgb, mpp=mpp, app_mag=round(10.0 / mpp, 2))
    return path


def _plan(
    renderer: str,
    n_slides: int,
    seed: int,
    size_um: float,
    mpp: float,
    tumor_fraction: float,
    confound: float,
    ink_share: float,
) -> pd.DataFrame:
    """The slides to render: ``he`` (the demo's planted nuclei) or ``cells`` (planted eosin);
    ``ink_share`` of them (every k-th, independent of label) get green pen marks."""
    if renderer not in RENDERERS:
        raise ValueError(f"renderer must be one of {RENDERERS}, got {renderer!r}")
    if renderer == "cells":
        plan = pd.DataFrame(plan_cells_cohort(n_slides, seed, size_um=size_um, mpp=mpp))
        plan["renderer"] = "cells"
    else:
        plan = plan_cohort(
            n_slides,
            seed,
            size_um=size_um,
            mpp=mpp,
            tumor_fraction=tumor_fraction,
            confound=confound,
        )
    if ink_share:
        n_ink = int(round(n_slides * ink_share))
        order = np.random.default_rng([seed, 7]).permutation(n_slides)
        plan["ink"] = np.isin(np.arange(n_slides), order[:n_ink]).astype(int)
    return plan


def _stamp_matches(table: Path, stamp: Path, params: dict[str, Any]) -> bool:
    """Whether ``table`` exists and ``stamp`` records these generator ``params``."""
    return stamp.exists() and table.exists() and json.loads(stamp.read_text()) == params


def _write_table(table: Path, stamp: Path, cohort: pd.DataFrame, params: dict[str, Any]) -> None:
    """Write the cohort table, then its stamp (last: a crash in between is not cached)."""
    atomic_write(table, lambda tmp: cohort.to_csv(tmp, index=False))
    atomic_write_json(stamp, params)


def make_cohort(
    out: str | Path,
    *,
    n_slides: int = 16,
    seed: int = 0,
    size_um: float = 2048.0,
    mpp: float = 0.5,
    tumor_fraction: float = 0.5,
    confound: float = 0.75,
    renderer: str = "he",
    ink_share: float = 0.0,
    ray_cfg: RayConfig | None = None,
    progress: bool | None = None,
) -> Path:
    """Write slides + ``cohort.csv`` into ``out``; a no-op when the same cohort is already there.
    ``renderer``: ``he`` (the demo's) or ``cells`` (``pipeline/synthetic/cells.py``);
    ``ink_share``: the share of slides with pen marks (``pipeline/synthetic/marks.py``)."""
    out = Path(out).absolute()
    params = {
        "n_slides": n_slides,
        "seed": seed,
        "size_um": size_um,
        "mpp": mpp,
        "tumor_fraction": tumor_fraction,
        "confound": confound,
        "version": GENERATOR_VERSION,
    }
    if renderer != "he" or ink_share:  # (stamps of demo cohorts stay as they were)
        params |= {"renderer": renderer, "ink_share": ink_share}
    table = out / "cohort.csv"
    stamp = out / "cohort.json"
    plan = _plan(renderer, n_slides, seed, size_um, mpp, tumor_fraction, confound, ink_share)
    plan["path"] = [f"slides/{sid}.tif" for sid in plan["slide_id"]]
    if _stamp_matches(table, stamp, params):
        existing = read_table(table)
        if all((out / p).is_file() for p in existing["path"]):
            return table
    stamp.unlink(missing_ok=True)
    (out / "slides").mkdir(parents=True, exist_ok=True)
    ensure_ray(ray_cfg or RayConfig())
    specs = plan.to_dict(orient="records")
    refs = [_write_slide.remote(spec, str(out / spec["path"])) for spec in specs]
    if progress is None:
        progress = sys.stderr.isatty()
    with tqdm(total=len(refs), unit="slide", desc="demo cohort", disable=not progress) as bar:
        pending = refs
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            ray.get(done)
            bar.update(len(done))
    # The slides carry their MPP; an `mpp` column would be read as a per-slide override.
    _write_table(table, stamp, plan.drop(columns=["mpp"]), params)
    return table


# Bump when the synthetic CT rendering or file writing changes.
CT_GENERATOR_VERSION = 1


def _ct_rows(
    n_images: int, seed: int, steatosis_fraction: float, png_fraction: float
) -> list[dict[str, Any]]:
    """The planned CT images, each with its ``path`` and (PNG only) ``mpp`` column."""
    from pipeline.synthetic.ct import SPACING_MM, plan_ct_cohort

    rows = plan_ct_cohort(
        n_images, seed, steatosis_fraction=steatosis_fraction, png_fraction=png_fraction
    )
    for r in rows:
        r["path"] = f"images/{r['slide_id']}.{r['format']}"
        r["mpp"] = SPACING_MM * 1000.0 if r["format"] == "png" else None
    return rows


def _write_ct_image(out: Path, r: dict[str, Any], seed: int) -> None:
    """Render one CT slice and write it as a 12-bit DICOM or an 8-bit windowed PNG."""
    from pipeline.io.dicom_writer import write_dicom
    from pipeline.io.images import save_png
    from pipeline.synthetic.ct import SPACING_MM, WINDOW, render_ct, window_to_unit

    hu = render_ct(r)
    if r["format"] == "dcm":
        stored = np.clip(np.round(hu + 1024.0), 0, 4095).astype(np.uint16)
        write_dicom(
            out / r["path"],
            stored,
            modality="CT",
            spacing_mm=(SPACING_MM,) * 2,
            rescale=(1.0, -1024.0),
            window=WINDOW,
            bits_stored=12,
            uid_seed=f"{seed}-{r['slide_id']}",
        )
    else:
        grey = np.round(window_to_unit(hu) * 255.0).astype(np.uint8)
        save_png(out / r["path"], grey[..., None])


def make_ct_cohort(
    out: str | Path,
    *,
    n_images: int = 240,
    seed: int = 0,
    steatosis_fraction: float = 0.5,
    png_fraction: float = 0.25,
) -> Path:
    """Write the synthetic abdominal CT cohort (``pipeline.synthetic.ct``) into ``out``:
    ``images/<id>.dcm`` (12-bit CT, rescale intercept −1024, the abdomen window, pixel
    spacing) or ``images/<id>.png`` (the same slice already windowed to 8 bits), and
    ``cohort.csv`` (PNG rows carry the pixel spacing in its ``mpp`` column, as a PACS export
    would lose it); a no-op when the same cohort is already there. Rendering is ~10 ms an
    image, so it runs in this process (no Ray)."""
    out = Path(out).absolute()
    params = {
        "kind": "ct",
        "n_images": n_images,
        "seed": seed,
        "steatosis_fraction": steatosis_fraction,
        "png_fraction": png_fraction,
        "version": CT_GENERATOR_VERSION,
    }
    table, stamp = out / "cohort.csv", out / "cohort.json"
    rows = _ct_rows(n_images, seed, steatosis_fraction, png_fraction)
    done = _stamp_matches(table, stamp, params)
    if done and all((out / r["path"]).is_file() for r in rows):
        return table
    stamp.unlink(missing_ok=True)
    for r in rows:
        _write_ct_image(out, r, seed)
    _write_table(table, stamp, pd.DataFrame(rows).drop(columns=["seed"]), params)
    return table


def grow_cohort(
    table: str | Path,
    out: str | Path,
    *,
    n_new: int,
    seed: int,
    size_um: float = 2048.0,
    prefix: str = "new",
) -> Path:
    """A cohort that grew: ``table``'s slides plus ``n_new`` new synthetic slides (rendered
    into ``out``, ids ``<prefix>_000``…), as ``out/cohort.csv`` with absolute paths — the
    scheduled re-analysis case (benchmarks and tests of incremental runs)."""
    out = Path(out).absolute()
    new_table = make_cohort(out / "new", n_slides=n_new, seed=seed, size_um=size_um)
    old, new = read_table(Path(table)), read_table(new_table)
    old["path"] = [str((Path(table).absolute().parent / p).absolute()) for p in old["path"]]
    new["path"] = [str(new_table.parent / p) for p in new["path"]]
    rename = {s: f"{prefix}_{i:03d}" for i, s in enumerate(new["slide_id"])}
    new["slide_id"] = new["slide_id"].map(rename)
    if "patient" in new:
        new["patient"] = [f"{prefix}_patient_{i:03d}" for i in range(len(new))]
    grown = pd.concat([old, new], ignore_index=True)
    path = out / "cohort.csv"
    atomic_write(path, lambda tmp: grown.to_csv(tmp, index=False))
    return path
