"""The Week value type, and the rule that stellar_core/weeks.py is the only home of date arithmetic."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import numpy as np
import pytest

from stellar_core.weeks import (
    DR17_FIRST_WEEK,
    DR17_LAST_MJD,
    Week,
    mjd_to_week_key,
    week_keys_for_mjds,
    week_mjd_range,
)

ROOT = Path(__file__).resolve().parents[1]
WEEK_MODULE = ROOT / "stellar_core" / "weeks.py"
SOURCE_DIRS = ("stellar_core", "stellar_mlflow", "stellar_api", "stellar_assets", "stellar_app", "stellar_serving",
               "benchmarks")
# Adding days, parsing ISO dates, day counts and multiples of seven: what a week computation looks like.
DATE_ARITHMETIC = re.compile(
    r"timedelta|fromisoformat\(|datetime64|\bdays\s*=|\.days\b|//\s*7\b|\b7\s*\*|\*\s*7\b"
    r"|\bdate\(\s*\d|\.(iso)?weekday\(|^\s*(import datetime|from datetime)"
)


def test_dr17_first_and_last_weeks():
    first, last = Week.of(DR17_FIRST_WEEK), Week.from_mjd(DR17_LAST_MJD)
    assert (first.key, last.key) == ("2000-03-05", "2020-03-22")
    assert first.mjd_range == (51608, 51614)
    assert last.mjd_range == (58930, 58936)  # MJD 58932 is Tuesday 2020-03-24


def test_range_of_the_survey_has_1047_weeks_in_order():
    weeks = Week.range("2000-03-05", "2020-03-22")
    assert len(weeks) == 1047
    assert (weeks[0].key, weeks[-1].key) == ("2000-03-05", "2020-03-22")
    assert all(b == a.next and a < b for a, b in zip(weeks, weeks[1:]))
    assert [w.key for w in weeks] == sorted(w.key for w in weeks)  # keys sort as the weeks do


def test_range_ends():
    assert Week.range("2010-01-03", "2010-01-03") == [Week.of("2010-01-03")]
    assert Week.range("2010-01-10", "2010-01-03") == []
    assert len(Week.range(Week.of("2010-01-03"), dt.date(2010, 1, 16))) == 2  # a Saturday ends the 2nd week


def test_every_week_starts_on_sunday_and_holds_its_days():
    for day in (dt.date(2000, 1, 1) + dt.timedelta(days=n) for n in range(0, 800, 3)):
        week = Week.of(day)
        assert week.start.weekday() == 6
        assert week.start <= day < week.next.start
        assert Week.of(week.key) == week  # key round trip
        assert Week.of(day.isoformat()) == week


def test_mjd_round_trips_agree_with_the_vectorised_function():
    mjds = np.arange(51540, 51540 + 400)
    keys = week_keys_for_mjds(mjds)
    for mjd, key in zip(mjds, keys):
        week = Week.from_mjd(int(mjd))
        assert week.key == key == mjd_to_week_key(int(mjd))
        first, last = week.mjd_range
        assert first <= mjd <= last == first + 6
        assert week.mjd_range == week_mjd_range(week.key)
        assert Week.from_mjd(first) == Week.from_mjd(last) == week
        assert Week.from_mjd(first - 1) == week.prev and Week.from_mjd(last + 1) == week.next


def test_adding_and_subtracting_weeks_across_year_ends():
    assert (Week.of("1999-12-26") + 1).key == "2000-01-02"
    assert (Week.of("2000-12-31") + 1).key == "2001-01-07"
    assert (Week.of("2001-01-07") - 1).key == "2000-12-31"
    assert (Week.of("2020-03-22") - 1046).key == "2000-03-05"
    assert (2 + Week.of("2019-12-22")).key == "2020-01-05"
    assert Week.of("2020-03-22") - Week.of("2000-03-05") == 1046
    assert Week.of("2000-03-05") - Week.of("2020-03-22") == -1046
    assert Week.of("2004-02-29").next.prev == Week.of("2004-02-29")  # leap day, a Sunday
    assert Week.of("2000-01-02").index == 0 and Week.of("2010-01-03").index == 522


def test_a_week_value_is_a_sunday():
    with pytest.raises(ValueError, match="starts on a Sunday"):
        Week(dt.date(2000, 3, 7))
    with pytest.raises(ValueError):
        Week.of("not a date")
    assert Week.of("2000-03-07") == Week.of("2000-03-05")  # any day names its week
    assert str(Week.of("2000-03-05")) == "2000-03-05"
    assert {Week.of("2000-03-05"), Week.of(dt.date(2000, 3, 11))} == {Week.of("2000-03-05")}  # hashable, frozen


def _arithmetic_outside_week_module(roots: list[Path]) -> list[str]:
    hits = []
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            if path.resolve() == WEEK_MODULE:
                continue
            for n, line in enumerate(path.read_text().splitlines(), 1):
                if DATE_ARITHMETIC.search(line):
                    hits.append(f"{path}:{n}: {line.strip()}")
    return hits


def test_no_date_arithmetic_outside_the_week_module():
    hits = _arithmetic_outside_week_module([ROOT / d for d in SOURCE_DIRS])
    assert hits == [], "date arithmetic belongs in stellar_core/weeks.py (the Week type):\n" + "\n".join(hits)


def test_the_scan_finds_date_arithmetic(tmp_path):
    # So the rule above cannot pass by scanning nothing or matching nothing.
    assert len(list((ROOT / "stellar_assets").rglob("*.py"))) > 10
    sample = tmp_path / "sample.py"
    sample.write_text("import datetime as dt\n"
                      "nxt = (dt.date.fromisoformat(week) + dt.timedelta(days=7)).isoformat()\n"
                      "gap = (a - b).days // 7\n"
                      "first = dt.date(2000, 1, 2)\n"
                      "total = 7 * k\n")
    assert len(_arithmetic_outside_week_module([tmp_path])) == 5
