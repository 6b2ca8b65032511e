"""Where the repository and its data files are, for the defaults of the embedded set-up.

Pure: nothing here reads the environment. The project home and every other
setting come from the settings objects (stellar_assets.settings for the code
location, stellar_app.settings for the CLI); preparing the home is the
application's job (stellar_app.home).
"""

from __future__ import annotations

from pathlib import Path

# The Kaggle download, where the README tells users to put it.
KAGGLE_CSV_NAMES = ("data/star_classification.csv", "data/star_classification.csv.gz")
# The repository's real test data, beside the checkout when present.
SHARED_SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "sdss17_sample.csv.gz"


def repo_root() -> Path:
    return Path(__file__).resolve().parents[1]


def default_sdss_csv(configured: str | None = None) -> tuple[str | None, str]:
    """The SDSS17 CSV the main job reads, and why that one (None: use the simulator).
    `configured` is STELLAR_SDSS_CSV as the caller's settings read it."""
    if configured:
        return configured, "STELLAR_SDSS_CSV"
    for name in KAGGLE_CSV_NAMES:
        candidate = repo_root() / name
        if candidate.exists():
            return str(candidate), f"the Kaggle download at {name}"
    if SHARED_SAMPLE.exists():
        return str(SHARED_SAMPLE), "the shared SDSS17 sample beside the checkout (../shared/data)"
    return None, "no SDSS17 CSV configured or found"
