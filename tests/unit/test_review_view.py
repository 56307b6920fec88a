"""What the officer's output review shows of a held result: the researcher's own view
of it (node/review.py:researcher_view), its tables as records and its figures as the
researcher's `job result --out` writes them."""

from __future__ import annotations

import base64

from jobs.stats.view import StatsResult
from node.review import researcher_view

RESULT = {"type": "stats", "rows": 40,
          "columns": {"age": {"count": 40, "mean": 41.5, "missing": 0}},
          "histograms": {"age": {"edges": [20, 40, 60], "counts": [18, 22],
                                 "suppressed": [False, False]}}}


def test_the_review_shows_the_researchers_tables_and_figures(tmp_path):
    shown = researcher_view("stats", RESULT, plots=True)
    assert shown["tables"]["summary"] == [{"column": "age", "count": 40, "mean": 41.5,
                                           "missing": 0}]
    assert shown["tables"]["histogram_age"][1] == {"bin_left": 40, "bin_right": 60,
                                                   "count": 22, "suppressed": False}
    written = {p.name: p.read_bytes() for p in StatsResult.from_json(RESULT).write(tmp_path)
               if p.suffix == ".png"}
    assert set(shown["plots"]) == set(written) == {"histogram_age.png"}
    assert base64.b64decode(shown["plots"]["histogram_age.png"]).startswith(b"\x89PNG")


def test_a_result_its_view_cannot_render_still_shows_why():
    shown = researcher_view("stats", {"type": "stats", "columns": "not a table"})
    assert shown["tables"] == {} and "could not render it" in shown["note"]
