from pathlib import Path

import pandas as pd
import pytest

from pipeline.cohort import CohortError, metadata_columns, read_cohort


def test_csv_and_parquet_paths_resolve_against_table(tmp_path: Path) -> None:
    df = pd.DataFrame(
        {
            "slide_id": ["a", "b"],
            "path": ["s/a.svs", "/abs/b.svs"],
            "label": [1, 0],
            "center": ["X", "Y"],
            "mpp": [0.25, None],
        }
    )
    df.to_csv(tmp_path / "c.csv", index=False)
    df.to_parquet(tmp_path / "c.parquet")
    for name in ("c.csv", "c.parquet"):
        out = read_cohort(tmp_path / name)
        assert out["path"].tolist() == [str(tmp_path / "s/a.svs"), "/abs/b.svs"]
        assert out["mpp"].iloc[0] == 0.25 and pd.isna(out["mpp"].iloc[1])
        assert metadata_columns(out) == ["slide_id", "label", "center"]


@pytest.mark.parametrize(
    ("csv", "message"),
    [
        ("slide_id,path\na,x\na,y\n", r"duplicate slide_id \['a'\]"),
        ("slide_id,label\na,1\n", r"missing required column\(s\) \['path'\]"),
        ("slide_id,path\na/b,x\n", "bad: \\['a/b'\\]"),
        ("slide_id,path,mpp\na,x,-1\n", "mpp must be a positive number"),
        ("slide_id,path\n", "no slides"),
        ("slide_id,path,x\na,p,1\n", "reserved"),
    ],
)
def test_invalid_cohorts(tmp_path: Path, csv: str, message: str) -> None:
    (tmp_path / "c.csv").write_text(csv)
    with pytest.raises(CohortError, match=message) as info:
        read_cohort(tmp_path / "c.csv")
    assert str(tmp_path / "c.csv") in str(info.value)


def test_missing_table(tmp_path: Path) -> None:
    with pytest.raises(CohortError, match="cohort table not found"):
        read_cohort(tmp_path / "nope.csv")
