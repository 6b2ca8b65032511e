"""The stretch of the sample the monitoring tests use: the 2008 change from SDSS-II (galaxies) to
SEGUE (stars). A champion trained on March-April 2008 meets the star-heavy weeks of May-June 2008,
so drift is real, not staged."""

FIRST_INGESTED = "2008-01-06"
LAST_INGESTED = "2008-07-13"
CHAMPION_WEEK = "2008-04-27"  # trained on 2008-03-09..2008-04-27: galaxies and stars
STABLE_WEEK = "2008-04-27"  # (not predicted: the champion trained on it)
DRIFT_WEEK = "2008-06-08"  # 42 spectra, 41 of them stars
SMALL_WEEK = "2008-07-06"  # 4 spectra; with the 3 weeks before it 28 < 30 rows
EMPTY_WEEK = "2008-05-18"  # no spectra at all
SMALL_MODEL = {"n_estimators": 30, "max_depth": 3, "learning_rate": 0.3, "latency_single_row_repeats": 10}
# A first champion the later one clearly beats: the promotion gate promotes only on evidence.
WEAK_MODEL = {"n_estimators": 1, "max_depth": 1, "class_weighting": "none", "latency_single_row_repeats": 10}
