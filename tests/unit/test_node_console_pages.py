"""The node console's form handling, without a node: the metadata form over the
officer's YAML, and the node's one refusal split into its problems."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from node.console.pages import problem_list
from node.console.pages.datasets import metadata_yaml
from scifed.errors import UserError
from scifed.record import check_metadata, problem_report

PENGUINS = Path(__file__).resolve().parents[2] / "configs" / "datasets" / "penguins.yaml"


def test_form_fields_replace_the_yaml_and_keep_the_rest():
    base = PENGUINS.read_text()
    merged = yaml.safe_load(metadata_yaml(base, {
        "title_en": "Penguins of Dream", "keywords": "penguins, Dream ,  seabirds",
        "security_grade": "G2", "contact_email": "desk@example.org", "version": ""}))
    original = yaml.safe_load(base)
    assert merged["title"] == {**original["title"], "en": "Penguins of Dream"}
    assert merged["keywords"] == ["penguins", "Dream", "seabirds"]
    assert merged["security_grade"] == "G2"
    assert merged["contact_point"] == {**original["contact_point"], "email": "desk@example.org"}
    assert merged["version"] == original["version"]  # an empty field leaves the YAML's
    assert merged["fields"] == original["fields"]
    assert check_metadata(metadata_yaml(base, {}), "m").problems == []


@pytest.mark.parametrize("text", ["- a list\n", "title: [unclosed\n"])
def test_a_yaml_that_is_not_a_mapping_is_one_message(text):
    with pytest.raises(UserError, match="metadata YAML"):
        metadata_yaml(text, {})


def test_the_nodes_refusal_becomes_its_list_of_problems():
    meta = yaml.safe_load(PENGUINS.read_text())
    meta["version"] = "one"
    meta["contact_point"]["email"] = "desk-at-example"
    problems = check_metadata(yaml.safe_dump(meta), "the metadata form").problems
    message = problem_report("the metadata form", problems)
    assert problem_list(message) == problems and len(problems) == 2
    assert problem_list("approval ap-1 is already approved") == [
        "approval ap-1 is already approved"]

