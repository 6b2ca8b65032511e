"""What the replay prints: a long replay's timeline shows its retraining weeks, not every week."""

from __future__ import annotations

import pandas as pd

from stellar_app.replay import decision_line, print_timeline


def timeline_of(weeks: int, retrained_at: set[int]) -> pd.DataFrame:
    keys = [str((pd.Timestamp("2001-01-07") + pd.Timedelta(weeks=k)).date()) for k in range(weeks)]
    return pd.DataFrame({
        "week": keys, "rows": [5] * weeks, "model_version": ["1"] * weeks, "accuracy": [0.9] * weeks,
        "drift_status": ["ok"] * weeks, "drift_flags": [""] * weeks,
        "retrained": [k in retrained_at for k in range(weeks)],
        "promotion": ["promoted" if k in retrained_at else "" for k in range(weeks)]})


def test_a_short_replay_prints_every_week_with_spectra():
    lines: list[str] = []
    print_timeline(timeline_of(10, {4}), lines.append)
    assert sum(line.startswith("2001-") for line in lines) == 10


def test_a_long_replay_prints_only_its_retraining_weeks():
    timeline = timeline_of(500, {40, 300})
    lines: list[str] = []
    print_timeline(timeline, lines.append)
    printed = [line.split()[0] for line in lines if line.startswith("200")]
    assert printed == [timeline["week"][40], timeline["week"][300]]
    assert "500 weeks with spectra: only the 2 retraining weeks shown" in lines[0]


def test_a_decision_line_says_the_decision_once():
    promoted = decision_line("2017-12-17", "champion_degraded", "promoted", "7",
                             "promoted v7: promote: challenger right on 11 rows the champion missed")
    assert promoted == ("2017-12-17  retrained (champion_degraded): promoted v7: promote: challenger right on "
                        "11 rows the champion missed")
    retained = decision_line("2009-01-04", None, "retained", None, "retained v3, challenger v5 not promoted: tie")
    assert retained == "2009-01-04  retrained (requested): retained v3, challenger v5 not promoted: tie"
    blocked = decision_line("2010-02-07", "champion_degraded", "blocked by the gate", None,
                            "quality_floors: recall of GALAXY 0.8993 < floor 0.9000")
    assert blocked.endswith(": blocked by the gate: quality_floors: recall of GALAXY 0.8993 < floor 0.9000")
    assert decision_line("2010-02-07", "x", "no decision", None, "") == "2010-02-07  retrained (x): no decision"
    assert len(decision_line("2010-02-07", "x", "promoted", "9", "promoted v9: " + "y" * 500)) < 170
