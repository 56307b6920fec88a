"""The researcher console's job form in Chinese: every parameter of every job type has
its Chinese help beside the English description of its ``Spec``, the form rendered in
Chinese shows no English besides the data it displays (field names, choices, defaults,
the names of methods and examples of what to type), and the form's generic problems
(missing, wrong type, not one of the choices, out of range) are Chinese, while the CLI
reads pydantic's English as before."""

from __future__ import annotations

import pytest

from cli.ui import field_help, form
from cli.ui import messages as ui_messages  # noqa: F401 - the researcher console's text
from jobs import registry
from scifed.config import validation_problems
from scifed.web import i18n
from tests.unit.test_node_sentences import left_in_english, page

BUILT_IN = ("stats", "quality", "train", "regression", "pca", "crosstab", "survival", "psi")
# names in the help, the same in every language: models, methods, a library, and the
# examples of what to type
NAMES = ["MLP", "DP-SGD", "Cox", "Kaplan–Meier", "gaussian", "statsmodels", "columns",
         "body_mass_g", "mpg", "weight", "origin", "true", "stats", "ε"]


def test_every_parameter_of_every_job_type_has_english_and_chinese_help():
    assert set(BUILT_IN) <= set(registry.names())
    missing = [f"{t}.{n}" for t in BUILT_IN
               for n, info in registry.get(t).Spec.model_fields.items()
               if not info.description or field_help.key(t, n) not in i18n.catalog_keys()]
    assert missing == []
    zh = i18n.Translator("zh")
    assert zh(field_help.key("train", "rounds")) == "联邦训练的轮数"
    assert i18n.Translator("en")(field_help.key("train", "rounds")) == \
        registry.get("train").Spec.model_fields["rounds"].description


def test_the_check_finds_a_field_without_chinese_help(monkeypatch):
    """The ground truth of the test above: a field a type gains without its Chinese."""
    from pydantic import Field, create_model

    spec = registry.get("crosstab").Spec
    grown = create_model("Grown", __base__=spec, weights=(str | None, Field(
        default=None, description="a column of row weights")))
    monkeypatch.setattr(registry.get("crosstab"), "Spec", grown)
    missing = [n for n in grown.model_fields
               if field_help.key("crosstab", n) not in i18n.catalog_keys()]
    assert missing == ["weights"]
    # the form still shows a field it has no entry for, in its English description
    assert field_help.help_text(i18n.Translator("zh"), "crosstab", "weights",
                                "a column of row weights") == "a column of row weights"


def fields_page(job_type: str, lang: str, problems: dict | None = None) -> str:
    f = form.JobForm(type=job_type)
    fields = form.type_fields(job_type)
    return page(["cli.ui"], "ui.title", "form_fields.html", lang, f=f, fields=fields,
                advanced_only=form.advanced_only(job_type), problems=problems or {},
                help_text=field_help.help_text)


def shown_data(job_type: str) -> list[str]:
    """What the form shows of the type as data: its name, its fields' names, their
    choices and defaults."""
    out = [job_type, *form.advanced_only(job_type)]
    for f in form.type_fields(job_type):
        out += [f.name, *f.options, f.shown_default()]
    return [x for x in out if x]


@pytest.mark.parametrize("job_type", BUILT_IN)
def test_the_form_of_each_job_type_in_chinese_shows_english_only_in_its_data(job_type):
    html = fields_page(job_type, "zh")
    assert left_in_english(html, [*shown_data(job_type), *NAMES]) == []
    english = fields_page(job_type, "en")
    for f in form.type_fields(job_type):  # the English page keeps the spec's words
        assert f.help in english.replace("&#39;", "'").replace("&gt;", ">")


def test_the_check_fails_on_help_left_in_english():
    html = fields_page("crosstab", "en")
    assert left_in_english(html, [*shown_data("crosstab"), *NAMES])


def problems_of(job_type: str, values: dict[str, list[str]], params: str = "") -> dict:
    f = form.JobForm(study="s", type=job_type, datasets=["urn:sdn:dream:ds:penguins"],
                     values=values, params=params, shown=True)
    with pytest.raises(form.FormProblems) as caught:
        form.checked(f)
    return caught.value.by_slot


def test_the_forms_generic_problems_are_chinese_and_the_cli_reads_pydantics_english():
    by_slot = problems_of("train", {"rounds": ["0"], "lr": ["abc"],
                                    "features": ["x"], "label": ["y"]},
                          params="task: guess\nmodel: {kind: mlp, hidden: [0]}\nbogus: 1\n")
    zh = i18n.Translator("zh")
    shown = {slot: [zh.said(m) for m in ms] for slot, ms in by_slot.items()}
    assert shown["p.rounds"] == ["应大于或等于 1"]
    assert shown["p.lr"] == ["应为数值"]
    assert shown["p.task"] == ["应为以下之一：'classification', 'regression'"]
    assert "bogus：不允许此项（不是该处的参数）" in shown["params"]
    assert "model.hidden.0：应大于或等于 1" in shown["params"]
    # the same problems in English are pydantic's words, as `scifed job submit` says
    english = {slot: [str(m) for m in ms] for slot, ms in by_slot.items()}
    assert english["p.rounds"] == ["Input should be greater than or equal to 1"]
    assert english["p.task"] == ["Input should be 'classification' or 'regression'"]
    html = fields_page("train", "zh", problems=by_slot)
    data = [*shown_data("train"), *NAMES, "model.hidden.0", "bogus"]
    assert left_in_english(html, data) == []


def test_a_missing_field_and_a_wrong_type_are_chinese():
    by_slot = problems_of("crosstab", {"rows": ["island"]}, params="layers: [1]\n")
    zh = i18n.Translator("zh")
    assert [zh.said(m) for m in by_slot["p.columns"]] == ["必填项"]
    assert [zh.said(m) for m in by_slot["p.layers"]] == ["应为文本"]


def test_a_validators_own_message_stays_english():
    """A job type's validator words its problem itself; it has no key (a known gap)."""
    by_slot = problems_of("crosstab", {"rows": ["island"], "columns": ["island"]})
    messages = [m for ms in by_slot.values() for m in ms]
    assert messages and all(i18n.Translator("zh").said(m) == str(m) for m in messages)


def test_the_schema_problems_still_read_as_pydantics_messages():
    from pydantic import BaseModel, ValidationError

    class M(BaseModel):
        n: int

    try:
        M(n="many")
    except ValidationError as exc:
        (where, message), = validation_problems(exc)
    assert (where, message) == ("n", "Input should be a valid integer, unable to parse "
                                     "string as an integer")
    assert message.key == "pyd.int_parsing"
