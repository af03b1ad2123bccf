"""Per-slide tile draws: seeded, at most n per slide, and a new slide changes no other
slide's picks (so cached parts stay valid when a cohort grows)."""

from __future__ import annotations

import pandas as pd

from pipeline.selection import per_slide, per_slide_mask, reference_pick


def tiles(slides: list[str], per: int = 20) -> pd.DataFrame:
    rows = [(f"{s}_{i}", s, i) for s in slides for i in range(per)]
    return pd.DataFrame(rows, columns=["tile_id", "slide_id", "index"])


def test_draws_are_seeded_capped_and_local_to_their_slide() -> None:
    two, three = tiles(["a", "b"]), tiles(["a", "b", "c"])
    for draw in (lambda t, s: t[per_slide_mask(t, 5, s)], lambda t, s: per_slide(t, 5, s)):
        picked = draw(two, 0)
        assert picked.groupby("slide_id").size().tolist() == [5, 5]
        assert picked.equals(draw(two, 0)) and not picked.equals(draw(two, 1))
        grown = draw(three, 0)
        assert set(grown.loc[grown["slide_id"] != "c", "tile_id"]) == set(picked["tile_id"])
    few = tiles(["a"], per=3)
    assert per_slide_mask(few, 5, 0).sum() == 3 and len(per_slide(few, 5, 0)) == 3


def test_the_analysis_takes_a_subset_of_the_inversions_own_draw() -> None:
    """Drawing 5 then 12 per slide with one seed: the 5 are among the 12 (one rule for the
    inversion's pick and the analysis' pick among the inverted tiles)."""
    t = tiles(["b", "a"], per=30)
    twelve, five = per_slide(t, 12, 3), per_slide(t, 5, 3)
    assert set(five["tile_id"]) <= set(twelve["tile_id"])
    assert five["slide_id"].tolist() == sorted(five["slide_id"])


def test_reference_tiles_change_only_where_new_tiles_hash_lower() -> None:
    two, three = tiles(["a", "b"]), tiles(["a", "b", "c"])
    before, after = reference_pick(two, 8, 0), reference_pick(three, 8, 0)
    kept = set(after["tile_id"]) & set(before["tile_id"])
    new = set(after["tile_id"]) - kept
    assert len(after) == 8 and new and all(t.startswith("c_") for t in new)
    assert len(set(before["tile_id"]) - kept) == len(new)  # each new tile displaces one
