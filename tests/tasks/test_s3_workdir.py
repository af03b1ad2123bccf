"""An ``s3://`` workdir against a real S3-compatible server on loopback (moto in server mode,
a separate process speaking HTTP): tiling, manifests, stage stamps, run manifests and Ray Train
checkpoints go to the bucket; slides are read from the local disk."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from pipeline.config import config_from_dict
from pipeline.io.files import WorkdirBusyError, workdir_lock
from pipeline.io.paths import as_path
from pipeline.io.tile_store import TileStore
from tasks.cli import EXIT_PARTIAL
from tasks.make_cohort import make_cohort
from tasks.run import run_all
from tasks.tile import run_tiling

from conftest import SVS

pytest.importorskip("moto.server", reason="moto[server] is a dev dependency")
s3fs = pytest.importorskip("s3fs", reason="s3fs is the optional 's3' extra")

REPO = Path(__file__).resolve().parents[2]
KEY, SECRET, REGION = "stylepath-test", "stylepath-test-secret", "us-east-1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3_endpoint():
    """moto's S3 server on 127.0.0.1 (its own process), stopped after the module."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"{url}/moto-api/", timeout=2).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"moto server did not start on {url}")
            time.sleep(0.2)
    yield url
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture()
def bucket(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh bucket; this process reaches it through the standard AWS environment."""
    env = {
        "AWS_ENDPOINT_URL": s3_endpoint,
        "AWS_ACCESS_KEY_ID": KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    name = f"stylepath-{uuid.uuid4().hex[:10]}"
    s3fs.S3FileSystem(skip_instance_cache=True).mkdir(name)
    return name


def storage_options(endpoint: str) -> dict:
    """For the Ray workers, which may have started before this module set the environment."""
    return {
        "endpoint_url": endpoint,
        "key": KEY,
        "secret": SECRET,
        "client_kwargs": {"region_name": REGION},
    }


def fs() -> s3fs.S3FileSystem:
    return s3fs.S3FileSystem(skip_instance_cache=True)


def objects(prefix: str) -> dict[str, tuple[str, str]]:
    """key → (ETag, LastModified) of every data object under ``prefix`` (not the resolved
    ``config.yaml``, rewritten whenever the config's text changes)."""
    found = fs().find(prefix, detail=True)
    return {
        k: (v["ETag"], str(v["LastModified"]))
        for k, v in found.items()
        if not k.endswith("/config.yaml")
    }


def test_tile_into_s3_read_back_rerun_and_resume(
    tmp_path: Path, bucket: str, s3_endpoint: str, ray_local
) -> None:
    table = make_cohort(tmp_path / "cohort", n_slides=2, seed=5, size_um=512)
    cohort = pd.read_csv(table)
    bad = tmp_path / "cohort" / "broken.tif"
    bad.write_bytes(b"not a tiff")
    extra = [{"slide_id": "svs", "path": str(SVS)}, {"slide_id": "broken", "path": str(bad)}]
    cohort = pd.concat([cohort, pd.DataFrame(extra)], ignore_index=True)
    cohort.to_csv(table, index=False)
    base = {
        "cohort": str(table),
        "tiling": {"mpp": 1.0, "size": 64, "min_tissue": 0.5},
        "storage": {"tiles_per_chunk": 1, "tiles_per_shard": 16},
        "ray": {"tiles_per_task": 16},
    }
    url = f"s3://{bucket}/work"
    opts = storage_options(s3_endpoint)
    cfg = config_from_dict({**base, "workdir": url, "storage_options": opts})
    local = config_from_dict({**base, "workdir": str(tmp_path / "local")})

    first = json.loads(run_all(cfg, until="tile").read_text())
    (stage,) = first["stages"]
    assert stage["status"] == "ran" and stage["summary"]["ok"] == 3, stage
    assert stage["summary"]["failed"] == 1 and "broken" in stage["summary"]["failures"]
    run_tiling(local)

    # Read back through the tile store, pandas (s3fs) and zarr: the same as a local workdir.
    s3_store, local_store = TileStore(cfg.workdir / "tiles"), TileStore(local.workdir / "tiles")
    tiles = pd.read_parquet(f"{url}/tiles/tiles.parquet")  # env credentials, no options
    pd.testing.assert_frame_equal(tiles, local_store.read_manifest())
    pd.testing.assert_frame_equal(s3_store.read_manifest(), tiles)
    slides = pd.read_parquet(f"{url}/tiles/slides.parquet").set_index("slide_id")
    assert slides.loc["broken", "status"] == "failed"
    assert "broken.tif" in slides.loc["broken", "error"]
    assert len(tiles) > 40 and set(tiles["slide_id"]) == {*cohort["slide_id"][:2], "svs"}
    for sid in tiles["slide_id"].unique():
        np.testing.assert_array_equal(s3_store.read_tiles(sid), local_store.read_tiles(sid))
    import zarr

    arr = zarr.open_array(f"{url}/tiles/tiles.zarr/svs", mode="r")
    assert arr.shape == (int((tiles["slide_id"] == "svs").sum()), 64, 64, 3)
    assert not fs().find(f"{bucket}/work/tiles/.staging")
    assert not fs().exists(f"{bucket}/work/tiles/.lock")  # the lease is released

    # `stylepath run --until tile` again, as a scheduled job would (a new process, credentials
    # and endpoint from the environment only): nothing rewritten, the stage skipped.
    before = objects(f"{bucket}/work/tiles")
    cfg_file = tmp_path / "s3.yaml"
    cfg_file.write_text(yaml.safe_dump({**base, "workdir": url}))
    env = {**os.environ, "RAY_ADDRESS": "local", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "tasks.cli", "run", str(cfg_file), "--until", "tile"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == EXIT_PARTIAL, proc.stdout + proc.stderr
    after = objects(f"{bucket}/work/tiles")
    assert after == before and len(after) > 20
    runs = sorted(fs().glob(f"{bucket}/work/runs/*/manifest.json"))
    assert len(runs) == 2
    again = json.loads(fs().cat_file(runs[-1]))
    (stage,) = again["stages"]
    assert stage["status"] == "skipped" and stage["reason"].startswith("inputs unchanged"), stage
    assert stage["summary"]["tiles_read"] == 0
    assert fs().exists(f"{bucket}/{runs[-1].split('/', 1)[1].rsplit('/', 1)[0]}/config.yaml")

    # A run killed after publishing a slide's array but before its record, with a half-written
    # staging array left behind: the re-run redoes that slide only; the outputs are unchanged.
    sid = str(cohort["slide_id"][0])
    fs().rm_file(f"{bucket}/work/tiles/parts/{sid}.json")
    fs().pipe_file(f"{bucket}/work/tiles/.staging/{sid}-dead/zarr.json", b"{}")
    resumed = run_tiling(cfg)
    assert resumed.n_skipped == 3 and resumed.n_tiles_read == int((tiles["slide_id"] == sid).sum())
    assert not fs().find(f"{bucket}/work/tiles/.staging")
    pd.testing.assert_frame_equal(s3_store.read_manifest(), tiles)
    np.testing.assert_array_equal(s3_store.read_tiles(sid), local_store.read_tiles(sid))


def test_object_store_lock(bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = as_path(f"s3://{bucket}/locked")
    with workdir_lock(folder):
        assert fs().exists(f"{bucket}/locked/.lock")
        with pytest.raises(WorkdirBusyError, match="another stylepath run"), workdir_lock(folder):
            pass
    assert not fs().exists(f"{bucket}/locked/.lock")
    # A lease nobody refreshed (a killed run's) is taken over.
    fs().pipe_file(f"{bucket}/locked/.lock", b'{"id": "dead"}')
    monkeypatch.setattr("pipeline.io.files.LEASE_S", 0.0)
    with workdir_lock(folder):
        assert json.loads(fs().cat_file(f"{bucket}/locked/.lock"))["id"] != "dead"
    assert not fs().exists(f"{bucket}/locked/.lock")


def test_gan_checkpoints_in_the_bucket_and_resume(
    tmp_path: Path, bucket: str, s3_endpoint: str, ray_local
) -> None:
    table = make_cohort(tmp_path / "cohort", n_slides=2, seed=3, size_um=384)
    gan = {
        "preset": "tiny32",
        "batch_size": 8,
        "tick_kimg": 0.016,
        "total_kimg": 0.016,
        "metric_images": 32,
        "metric_ticks": 1,
        "num_workers": 1,
        "cpus_per_worker": 1,
    }
    raw = {
        "cohort": str(table),
        "workdir": f"s3://{bucket}/work",
        "storage_options": storage_options(s3_endpoint),
        "tiling": {"mpp": 1.0, "size": 32, "min_tissue": 0.5},
        "gan": gan,
    }
    cfg = config_from_dict(raw)
    first = json.loads(run_all(cfg, until="train-gan").read_text())
    status = {s["name"]: s["status"] for s in first["stages"]}
    assert status == {"tile": "ran", "train-gan": "ran"}, first["stages"]
    ckpts = fs().glob(f"{bucket}/work/gan/ray/train/checkpoint_*/state.pt")
    assert len(ckpts) == 1, fs().find(f"{bucket}/work/gan")
    for name in ("generator.safetensors", "generator.json", "metrics.parquet", "reals.png"):
        assert fs().exists(f"{bucket}/work/gan/{name}"), name
    assert fs().exists(f"{bucket}/work/runs/stamps/train-gan.json")

    # Unchanged: skipped by its stamp in the bucket.
    again = json.loads(run_all(cfg, until="train-gan").read_text())
    status = {s["name"]: (s["status"], s["reason"]) for s in again["stages"]}
    assert status["train-gan"] == ("skipped", "inputs unchanged"), again["stages"]
    assert status["tile"][0] == "skipped"
    # A longer target resumes from the checkpoint in the bucket (not from image 0).
    longer = config_from_dict({**raw, "gan": {**gan, "total_kimg": 0.032}})
    resumed = json.loads(run_all(longer, until="train-gan").read_text())
    assert resumed["stages"][-1]["status"] == "ran"
    metrics = pd.read_parquet(f"s3://{bucket}/work/gan/metrics.parquet")
    assert metrics["kimg"].tolist() == pytest.approx([0.016, 0.032])
    from pipeline.gan.generator import load_generator

    g = load_generator(longer.workdir / "gan")
    assert g.meta["kimg"] == pytest.approx(0.032)
