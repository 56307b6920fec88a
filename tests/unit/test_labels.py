"""Tags for undeclared group labels and the round that reveals the ones k rows hold
(jobs/stats/labels.py, jobs/stats/release.py)."""

from __future__ import annotations

import numpy as np
import pytest

from jobs.base import Pooled
from jobs.stats import labels
from jobs.stats.release import _revealed

KEY = b"k" * 32


def test_a_declared_label_travels_as_itself_and_any_other_as_a_tag():
    assert labels.public_form(KEY, "title", "engineer", ["engineer"]) == "engineer"
    tag = labels.public_form(KEY, "title", "director", ["engineer"])
    assert labels.is_tag(tag) and "director" not in tag
    # the same label at another node gives the same tag; another job's key does not
    assert labels.public_form(KEY, "title", "director", None) == tag
    assert labels.tag(b"j" * 32, "title", "director") != tag
    assert labels.tag(KEY, "office", "director") != tag  # bound to the column


@pytest.mark.parametrize("holders", [1, 2, 3])
def test_holders_add_the_same_bytes_and_the_release_divides(holders):
    asked = ["研究员", "engineer", "x" * 200]
    blocks = [labels.encode([asked[0], None, asked[2]]) for _ in range(holders)]
    blocks.append(labels.encode([None, "engineer", None]))
    got = labels.decode(np.sum(blocks, axis=0), 3)
    assert got[:2] == asked[:2]
    assert got[2] == labels.clipped("x" * 200) and len(got[2].encode()) <= labels.LABEL_BYTES


def test_holders_that_disagree_do_not_decode():
    total = labels.encode(["ab"]) + labels.encode(["ac"])
    with pytest.raises(ValueError, match="disagree"):
        labels.decode(total, 1)
    with pytest.raises(ValueError, match="size"):
        labels.decode(total[:-1], 1)


def test_a_revealed_label_replaces_its_tag_and_merges_with_a_declared_one():
    t1, t2 = labels.tag(KEY, "title", "engineer"), labels.tag(KEY, "title", "chief")
    result = {"rows": 30, "groups": {"title": {
        "values": ["engineer", t1, t2], "counts": [6, 9, 15], "missing": 0,
        "suppressed": [False, False, False]}}}
    total = labels.encode(["engineer", "chief"])
    pooled = Pooled(totals={"sum": total}, vocab={}, k=5, dp={}, contributors=["a"],
                    record={"fields": [{"name": "title", "constraints": {"enum": ["engineer"]}}]},
                    state={"result": result, "labels": {"title": [t1, t2]}})
    out = _revealed(pooled).result["groups"]["title"]
    assert dict(zip(out["values"], out["counts"], strict=True)) == {"engineer": 15, "chief": 15}


def test_no_tag_is_revealed_when_any_contribution_was_noised():
    """Under DP a node's noise can lift the count of a tag only one row holds at an
    exact node to k or more: then no tag is revealed at all."""
    from jobs.stats.release import _finish

    tag = labels.tag(KEY, "title", "director")
    result = {"rows": 30, "groups": {"title": {
        "values": ["engineer", tag], "counts": [20, 7], "missing": 0,
        "suppressed": [False, False]}}}
    record = {"fields": [{"name": "title", "constraints": {"enum": ["engineer"]}}]}
    pooled = Pooled(totals={"sum": np.zeros(0)}, vocab={}, k=3,
                    dp={"alpha": {"epsilon": 1.0}}, contributors=["alpha", "beta"],
                    record=record)
    released = _finish(result, pooled)
    assert released.result["groups"]["title"]["values"] == ["engineer"]


def test_a_label_declared_elsewhere_is_counted_once_under_its_tag():
    """A node that does not declare 'technician' writes it as a tag; the union also holds
    the plain label another node declared. This node counts its technicians under the
    tag only (counting both doubled them)."""
    from jobs.stats.compute import local_labels

    def public(col, label):
        return labels.public_form(KEY, col, label, None)  # declares nothing

    tag = public("title", "technician")
    held = {"title": ["technician", "engineer", None]}
    local = local_labels({"title": ["technician", tag, public("title", "engineer")]},
                         held, public)
    assert local["title"] == [None, "technician", "engineer"]
