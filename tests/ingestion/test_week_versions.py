"""Each week's content version, computed for a whole batch at once, is the one content_version gives that week."""

from __future__ import annotations

import numpy as np
import pandas as pd

from stellar_assets.ingestion.assets import _split_by_week, _week_table
from stellar_core.week_changes import content_version, content_versions_by_week


def test_batch_versions_are_each_weeks_content_version(sdss_sample):
    batch = sdss_sample.head(400).sample(frac=1.0, random_state=3).reset_index(drop=True)  # rows out of ID order
    batch.loc[5, "spec_obj_ID"] = batch.loc[6, "spec_obj_ID"]  # a tie the stable sort must keep in row order
    batch.loc[7, "spec_obj_ID"] = np.nan
    batch["plate"] = batch["plate"].astype("float64")  # typed as a CSV with one blank cell types it
    weeks = _week_table(batch)
    keys = [*sorted(set(weeks)), "2000-03-19"]  # and a week without rows
    parts = _split_by_week(batch, weeks, keys)

    versions = content_versions_by_week(batch, weeks, keys)

    assert len(set(weeks)) > 5
    assert versions == {key: content_version(parts[key]) for key in keys}
    assert versions["2000-03-19"] == "empty"


def test_an_empty_batch_gives_every_week_the_empty_version(sdss_sample):
    empty = sdss_sample.iloc[0:0]
    assert content_versions_by_week(empty, pd.Series([], dtype=str), ["2012-10-07"]) == {"2012-10-07": "empty"}
