"""The README's results table is the committed summary's, number for number."""

from __future__ import annotations

import pandas as pd
from conftest import REPO_ROOT

from latlib.pipeline.report import headline_table


def test_readme_results_table_matches_the_committed_summary():
    expected = headline_table(pd.read_csv(REPO_ROOT / "results" / "summary.csv"))
    readme = (REPO_ROOT / "README.md").read_text()
    assert expected in readme, (
        "README.md's results table differs from results/summary.csv; paste this table:\n" + expected
    )
