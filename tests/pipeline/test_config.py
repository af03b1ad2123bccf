from pathlib import Path

import pytest

from pipeline.config import ConfigError, load_config

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_overrides_and_defaults(tmp_path: Path) -> None:
    cfg = load_config(
        write(tmp_path, "cohort: a.csv\nworkdir: w\ntiling:\n  mpp: 1.0\n"),
        ["tiling.size=64", "cohort=/x/c.csv", "ray.num_cpus=2", "tiling.default_mpp=null"],
    )
    assert cfg.tiling.mpp == 1.0 and cfg.tiling.size == 64 and cfg.tiling.step == 64
    assert cfg.cohort == Path("/x/c.csv")
    assert cfg.workdir.is_absolute() and cfg.workdir.name == "w"
    assert cfg.ray.num_cpus == 2 and cfg.tiling.default_mpp is None
    assert cfg.storage.tiles_per_shard == 64  # default


def test_unknown_key_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"tiling\.sise: unknown key"):
        load_config(write(tmp_path, "cohort: a\nworkdir: w\ntiling:\n  sise: 3\n"))
    with pytest.raises(ConfigError, match=r"bogus: unknown key"):
        load_config(write(tmp_path, "cohort: a\nworkdir: w\n"), ["bogus=1"])


def test_wrong_type_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"tiling\.size: .*integer.*'big'"):
        load_config(write(tmp_path, "cohort: a\nworkdir: w\n"), ["tiling.size=big"])
    with pytest.raises(ConfigError, match=r"tiling\.mpp: .*greater than 0"):
        load_config(write(tmp_path, "cohort: a\nworkdir: w\n"), ["tiling.mpp=-1"])
    with pytest.raises(ConfigError, match=r"gan\.spread_band: .*low <= 1 <= high"):
        load_config(write(tmp_path, "cohort: a\nworkdir: w\n"), ["gan.spread_band=[1.2, 1.5]"])
    band = load_config(write(tmp_path, "cohort: a\nworkdir: w\n"), ["gan.spread_band=[0.5, 2]"])
    assert band.gan.spread_band == (0.5, 2.0)


def test_missing_required_and_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="workdir: required key is missing"):
        load_config(write(tmp_path, "cohort: a\n"))
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "cohort: [unclosed\n"))
    with pytest.raises(ConfigError, match="expected dotted.key=value"):
        load_config(write(tmp_path, "cohort: a\nworkdir: w\n"), ["tiling.size"])
    with pytest.raises(ConfigError, match="tiles_per_shard must be a multiple"):
        load_config(
            write(tmp_path, "cohort: a\nworkdir: w\n"),
            ["storage.tiles_per_chunk=3", "storage.tiles_per_shard=64"],
        )


def test_section_hash_tracks_only_its_sections(tmp_path: Path) -> None:
    base = write(tmp_path, "cohort: a\nworkdir: w\n")
    h = load_config(base).section_hash("tiling", "storage")
    assert load_config(base, ["ray.num_cpus=1"]).section_hash("tiling", "storage") == h
    assert load_config(base, ["tiling.mpp=0.25"]).section_hash("tiling", "storage") != h


def test_shipped_configs_validate() -> None:
    for path in (REPO / "configs").glob("*.yaml"):
        load_config(path)


def test_files_sha256_sees_bytes_order_and_missing_files(tmp_path) -> None:
    from pipeline.io.files import files_sha256

    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    a.write_bytes(b"x" * (3 << 20))
    b.write_bytes(b"y")
    h = files_sha256([a, b])
    assert len(h) == 16 and h == files_sha256([a, b]) and h != files_sha256([b, a])
    a.write_bytes(b"x" * ((3 << 20) - 1) + b"z")
    assert files_sha256([a, b]) != h
    with pytest.raises(FileNotFoundError):
        files_sha256([tmp_path / "gone"])
    assert files_sha256([tmp_path / "gone"], missing_ok=True)


def test_the_ada_ops_of_the_config_are_the_augment_pipes() -> None:
    """``gan.ada_ops`` accepts exactly the operations AugmentPipe takes a weight for, in the
    order of its signature (the order it applies them)."""
    import inspect

    from pipeline.config import ADA_OPS
    from pipeline.gan.augment import AugmentPipe

    params = inspect.signature(AugmentPipe.__init__).parameters
    weights = [n for n in params if n not in ("self", "p") and "_" not in n]
    assert ADA_OPS == AugmentPipe.OPS == tuple(weights)
