"""The stretch of the sample and the model sizes the training tests use."""

# A busy stretch of the sample: 13 weeks, about 800 spectra.
FIRST_INGESTED = "2012-04-01"
LAST_INGESTED = "2012-06-24"
EARLY_WEEK = "2012-05-20"  # window 2012-04-01 .. 2012-05-20
LATE_WEEK = "2012-06-24"  # window 2012-05-06 .. 2012-06-24

# Small models keep the suite fast; the quality bar is measured by benchmarks/model_quality.py.
STRONG = {"n_estimators": 40, "max_depth": 4, "latency_single_row_repeats": 20}
WEAK = {"n_estimators": 1, "max_depth": 1, "class_weighting": "none", "latency_single_row_repeats": 20}
