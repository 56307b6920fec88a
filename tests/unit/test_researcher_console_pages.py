"""The researcher console's own logic, without a browser: the job form writes the
job.yaml a researcher would and refuses what `scifed job submit` refuses, with the same
message; the job-type facet agrees with the node's policy engine; `scifed ui` refuses to
listen beyond this host without TLS before it reads anything."""

from __future__ import annotations

import pytest
import yaml
from typer.testing import CliRunner

from cli.main import app
from cli.ui import catalog
from cli.ui.access import safe_name
from cli.ui.form import FormProblems, JobForm, advanced_only, checked, spec_text, type_fields
from jobs import registry
from jobs.spec import load_job
from node.policy import effective
from scifed.errors import Invalid, UserError
from scifed.grading import CELL_DEFAULTS, Access

IDS = ["urn:sdn:biscoe:ds:penguins", "urn:sdn:dream:ds:penguins"]


def test_the_form_writes_the_job_yaml_a_researcher_would():
    form = JobForm("penguins", "stats", IDS, "sex == 'female'",
                   "columns: [body_mass_g]\nhistograms:\n  body_mass_g: [3000, 4000, 5000]\n")
    by_hand = load_job(yaml.safe_dump({
        "study": "penguins", "type": "stats", "datasets": IDS, "filter": "sex == 'female'",
        "stats": {"columns": ["body_mass_g"],
                  "histograms": {"body_mass_g": [3000, 4000, 5000]}}}), "job.yaml")
    assert load_job(checked(form), "form").to_dict() == by_hand.to_dict()


@pytest.mark.parametrize(("form", "slot", "message"), [
    (JobForm("penguins", "stats", IDS, "", "colums: [body_mass_g]"),
     "params", "colums: Extra inputs are not permitted"),
    (JobForm("penguins", "stats", IDS, "", "columns: [body_mass_g\n"),
     "params", "not YAML (line 2)"),
    (JobForm("penguins", "stats", IDS + ["urn:sdn:biscoe:ds:weather"], "", "columns: [x]"),
     "datasets", "node 'biscoe' is named twice"),
    (JobForm("", "stats", IDS, "", "columns: [x]"), "study", "must not be empty"),
])
def test_the_form_refuses_what_job_submit_refuses_with_its_message(form, slot, message):
    with pytest.raises(FormProblems) as refused:
        checked(form)
    assert any(message in m for m in refused.value.by_slot[slot]), refused.value.by_slot
    if slot != "params" or "YAML" not in message:  # what a job.yaml submitted is told
        with pytest.raises(UserError) as submitted:
            load_job(spec_text(form), "the job form")
        assert message in str(submitted.value)


def test_the_fields_of_a_type_come_from_its_spec():
    """Each parameter a simple field can hold is a field of its kind; the rest (mappings,
    nested models) is left to the YAML box, so every parameter has a place."""
    for name in registry.names():
        shown = {f.name for f in type_fields(name)}
        assert shown | set(advanced_only(name)) == set(registry.get(name).Spec.model_fields)
    stats = {f.name: f for f in type_fields("stats")}
    assert stats["columns"].kind == "list" and not stats["columns"].numeric
    assert stats["measures"].kind == "choices"
    assert stats["measures"].options == ("count", "sum", "mean", "variance", "std")
    assert set(advanced_only("stats")) == {"histograms", "quantiles", "dp"}
    regression = {f.name: f for f in type_fields("regression")}
    assert regression["family"].kind == "choice" and regression["family"].default == "gaussian"
    assert regression["intercept"].kind == "bool" and regression["max_iter"].kind == "number"
    train = {f.name: f for f in type_fields("train")}
    assert train["rounds"].required and "model" in advanced_only("train")


def test_the_fields_fill_the_section_and_replace_the_yaml_keys():
    form = JobForm("penguins", "stats", IDS, "", "columns: [x]\nhistograms:\n  y: [1, 2]\n",
                   {"columns": ["bill_length_mm, body_mass_g"], "measures": ["mean", "std"],
                    "correlation": [""]}, True)
    spec = load_job(checked(form), "form").to_dict()["stats"]
    assert spec == {"columns": ["bill_length_mm", "body_mass_g"], "measures": ["mean", "std"],
                    "histograms": {"y": [1.0, 2.0]}}
    # a number typed in a field is a number in the job.yaml
    reg = JobForm("penguins", "regression", IDS, "", "",
                  {"y": ["body_mass_g"], "x": ["flipper_length_mm"], "max_iter": ["20"],
                   "intercept": []}, True)
    assert load_job(checked(reg), "form").to_dict()["regression"] == {
        "y": "body_mass_g", "x": ["flipper_length_mm"], "max_iter": 20, "intercept": False}


def test_every_problem_of_the_fields_is_shown_at_once_under_its_field():
    form = JobForm("", "stats", IDS, "", "", {"columns": ["body_mass_g, body_mass_g"],
                                              "correlation": ["body_mass_g"]}, True)
    with pytest.raises(FormProblems) as refused:
        checked(form)
    by_slot = refused.value.by_slot
    assert by_slot["p.columns"] == ["duplicate column: body_mass_g"]
    assert by_slot["p.correlation"] == ["list at least 2 columns to correlate"]
    assert by_slot["study"] == ["must not be empty"]
    # the same problems `scifed job submit` finds in the same job.yaml
    with pytest.raises(Invalid) as submitted:
        load_job(spec_text(form), "job.yaml")
    assert len(submitted.value.problems) == 3


def test_the_job_type_facet_is_what_the_node_policy_admits_by_default():
    for grade, category in CELL_DEFAULTS:
        node_side = {j for j, a in effective(grade, category).job_types.items()
                     if a != Access.FORBIDDEN}
        assert set(catalog.admitted(grade, category)) == node_side, (grade, category)
    assert catalog.admitted("G6", "CLOSED") == {}
    assert catalog.admitted("G9", "OPEN") == {}


def test_ui_refuses_a_public_address_without_tls(tmp_path):
    out = CliRunner().invoke(app, ["ui", "--host", "0.0.0.0", "--identity", str(tmp_path)])
    assert out.exit_code == 1
    assert "--tls-cert and --tls-key" in out.output


def test_ui_refuses_a_directory_that_is_no_identity(tmp_path):
    out = CliRunner().invoke(app, ["ui", "--identity", str(tmp_path), "--port", "0"])
    assert out.exit_code == 1 and "not an identity directory" in out.output


@pytest.mark.parametrize(("relayed", "kept"), [
    ("penguins", "penguins"), ("gr-8496613d7296", "gr-8496613d7296"),
    ("../../.ssh/authorized_keys", "_.._.ssh_authorized_keys"), ("..", "_"), ("", "_")])
def test_a_download_is_named_inside_its_folder_whatever_the_coordinator_relays(
        tmp_path, relayed, kept):
    assert safe_name(relayed) == kept
    assert (tmp_path / f"{safe_name(relayed)}.csv").parent == tmp_path


def test_a_job_held_for_output_review_is_said_so_in_both_languages():
    from cli.ui.messages import phase_note, phase_text
    from scifed.states import IN_OUTPUT_REVIEW, JobStatus
    from scifed.web.i18n import Translator

    en, zh = Translator("en"), Translator("zh")
    assert phase_text(en, IN_OUTPUT_REVIEW, IN_OUTPUT_REVIEW) == "in output review"
    assert phase_text(zh, IN_OUTPUT_REVIEW, IN_OUTPUT_REVIEW) == "输出审核中"
    assert "data officer" in phase_note(en, IN_OUTPUT_REVIEW)
    assert phase_text(en, "round", "round 2/5") == "round 2/5"  # as the coordinator says
    for status in JobStatus:  # every state has words in both languages
        assert en.term(status, "researcher") != zh.term(status, "researcher")
    # the researcher reads a withholding as what it is to them; the officer's word stays
    assert en.term("withheld", "researcher") == "withheld at output review"
    assert zh.term("withheld", "researcher") == "输出审核未放行"
    assert zh.term("withheld") == "不予发布" and zh.term("granted", "researcher") == "已授权"
