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
from cli.ui.form import JobForm, checked, spec_text
from jobs.spec import load_job
from node.policy import effective
from scifed.errors import UserError
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


@pytest.mark.parametrize(("form", "message"), [
    (JobForm("penguins", "stats", IDS, "", "colums: [body_mass_g]"),
     "stats.colums: Extra inputs are not permitted"),
    (JobForm("penguins", "stats", IDS, "", "columns: [body_mass_g\n"),
     "parameters: not YAML (line 2)"),
    (JobForm("penguins", "stats", IDS + ["urn:sdn:biscoe:ds:weather"], "", "columns: [x]"),
     "node 'biscoe' is named twice"),
    (JobForm("", "stats", IDS, "", "columns: [x]"), "study"),
])
def test_the_form_refuses_what_job_submit_refuses_with_its_message(form, message):
    with pytest.raises(UserError) as refused:
        checked(form)
    assert message in str(refused.value)
    if "YAML" not in message:  # the same check and words as a job.yaml submitted
        with pytest.raises(UserError) as submitted:
            load_job(spec_text(form), "the job form")
        assert str(submitted.value) == str(refused.value)


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
    from cli.ui.messages import phase_note, phase_text, state_text
    from scifed.states import IN_OUTPUT_REVIEW, JobStatus
    from scifed.web.i18n import Translator

    en, zh = Translator("en"), Translator("zh")
    assert phase_text(en, IN_OUTPUT_REVIEW, IN_OUTPUT_REVIEW) == "in output review"
    assert phase_text(zh, IN_OUTPUT_REVIEW, IN_OUTPUT_REVIEW) == "输出审核中"
    assert "data officer" in phase_note(en, IN_OUTPUT_REVIEW)
    assert phase_text(en, "round", "round 2/5") == "round 2/5"  # as the coordinator says
    for status in JobStatus:  # every state has words in both languages
        assert state_text(en, status) != state_text(zh, status)
