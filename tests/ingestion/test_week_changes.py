"""What a new batch does to a stored week, judged by values, not by how pandas typed a column."""

from __future__ import annotations

import pandas as pd

from stellar_core.week_changes import compare_week, content_version


def test_the_same_values_typed_differently_are_unchanged(sdss_sample):
    week = sdss_sample.head(50)
    retyped = week.astype({"plate": "float64", "MJD": "float64", "fiber_ID": "float64"})
    change = compare_week("2012-01-01", week, retyped)
    assert change.status == "unchanged" and change.changed == 0
    assert content_version(week) == content_version(retyped)


def test_added_removed_changed_and_rounded_ids(sdss_sample):
    stored = sdss_sample.head(10)
    new = pd.concat([stored.iloc[1:], sdss_sample.iloc[[10]]], ignore_index=True)
    new.loc[0, "g"] += 0.1
    change = compare_week("2012-01-01", stored, new)
    assert (change.added, change.removed, change.changed, change.shrinks) == (1, 1, 1, False)
    assert change.describe() == "1 rows added, 1 removed, 1 changed (10 -> 10 rows)"

    rounded = stored.assign(spec_obj_ID=stored["spec_obj_ID"].map(lambda v: float(f"{v:.14e}")))
    replaced = compare_week("2012-01-01", stored, rounded)
    moved = (rounded["spec_obj_ID"] != stored["spec_obj_ID"]).sum()
    assert moved > 0 and len(replaced.rounded_ids) == moved
