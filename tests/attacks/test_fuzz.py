"""Property-based fuzzing of every parser that reads input from outside the process.

The property, for each entry point: an input either parses or raises
:class:`scifed.errors.UserError` (never another exception, never RecursionError), and the
message is at most ``MAX_MESSAGE`` characters with no traceback in it.

Entry points: job YAML/JSON (``jobs.spec.load_job``, ``parse_job_dict``), row filters
under a G2 node's threshold grid (``scifed.filters.compile_filter``; what compiles must
be on the grid), dataset metadata YAML (``scifed.record.load_metadata``), data files
(``node.profiling.profile_file``) and the typed task messages (``scifed.tasks``).
Inputs: random structures over the real schema's keys, odd scalars, huge lists, deep
nesting, YAML anchors and aliases, mutated valid documents, random text and bytes.

``SCIFED_FUZZ_EXAMPLES`` sets the examples per test (default 200, so the file runs in
seconds in ``make test``); ``make fuzz`` runs 10,000 per test.
"""

from __future__ import annotations

import copy
import itertools
import json
import os
import typing
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from jobs import registry
from jobs.spec import load_job, parse_job_dict
from node.profiling import profile_file
from scifed.errors import UserError
from scifed.record import load_metadata
from scifed.tasks import ComputeRequest, ReleaseRequest, TaskHeader

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = int(os.environ.get("SCIFED_FUZZ_EXAMPLES", "200"))
MAX_MESSAGE = 1100  # scifed.limits.MAX_MESSAGE_CHARS and a source name

FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much,
                                       HealthCheck.function_scoped_fixture])


def holds(call, *args, short: bool = True) -> object:
    """Run one entry point; the property holds or the test fails with what broke it.
    ``short=False`` checks only that the error is a UserError, of any length."""
    try:
        return call(*args)
    except UserError as exc:
        message = str(exc)
        assert "Traceback" not in message
        if short:
            assert len(message) <= MAX_MESSAGE, f"{len(message)} characters: {message[:300]}…"
        return exc


# -- vocabulary: the real schema's keys and values -------------------------------------------
def _model_keys(model: type[BaseModel], seen: set) -> set[str]:
    if model in seen:
        return set()
    seen.add(model)
    keys = set(model.model_fields)
    for info in model.model_fields.values():
        stack = [info.annotation]
        while stack:
            kind = stack.pop()
            if isinstance(kind, type) and issubclass(kind, BaseModel):
                keys |= _model_keys(kind, seen)
            stack.extend(typing.get_args(kind))
    return keys


SECTIONS = registry.names()
SCHEMA_KEYS = sorted({"study", "type", "datasets", "filter", *SECTIONS}.union(
    *(_model_keys(registry.get(name).Spec, set()) for name in SECTIONS)))
WORDS = [*SCHEMA_KEYS, "count", "sum", "mean", "variance", "std", "mlp", "classification",
         "salary", "age", "species", "body_mass_g", "alpha", "staff", "urn:sdn:alpha:ds:staff",
         "urn:sdn:", "ds:", "sex == 'female'", "x > 1 and not y", "`a b` in ['x']", "",
         " ", "~", "null", "NaN", ".inf", "-.inf", "0x1F", "1e400", "2024-13-45", "yes",
         "&a", "*a", "!!binary", "!!python/object:os.system", "<<", "\t", "\x00", "\ud800",
         "é", "科学数据", "'", '"', "`", "\\", "{", "[", "#"]

scalars = st.one_of(
    st.none(), st.booleans(),
    st.integers(), st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(WORDS),
    st.text(max_size=40),
    st.sampled_from([201, 1100, 20_000]).map(lambda n: "x" * n),  # long strings
    st.sampled_from([10**4000, "9" * 5000, "-" * 3000]),     # huge numbers and text
)
keys = st.one_of(st.sampled_from(SCHEMA_KEYS), st.text(max_size=12), st.sampled_from(WORDS),
                 st.sampled_from([300, 1100, 20_000]).map(lambda n: "k" * n))  # long keys


def _nested(depth: int, kind: str) -> object:
    value: object = 1
    for _ in range(depth):
        value = [value] if kind == "list" else {"k": value}
    return value


structures = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=6),
        st.dictionaries(keys, children, max_size=6),
    ),
    max_leaves=30,
)


def values_up_to(longest: int) -> st.SearchStrategy:
    """Random structures, a quarter of them big: lists up to ``longest`` items, mappings
    of many columns, nesting far deeper than the limit. Sizes lie on both sides of the
    limits; mid-sized documents are valid work for the (pure-Python) YAML loader and
    would only make the sample slow."""
    big = st.one_of(
        st.sampled_from([n for n in (300, 3_000, 12_000) if n <= longest]).map(
            lambda n: list(range(n))),                                    # huge lists
        st.sampled_from([101, 1_000]).map(lambda n: {f"c{i}": [0, 1] for i in range(n)}),
        st.tuples(st.integers(1, 400), st.sampled_from(["list", "dict"])).map(
            lambda a: _nested(*a)),                                       # deep nesting
    )
    return st.one_of(structures, structures, structures, big)


values = values_up_to(12_000)        # job specs: 12,000 items are past the 64 KiB limit
meta_values = values_up_to(3_000)    # metadata: the 1 MiB limit is tested in test_limits


def _section(draw) -> dict:
    return draw(st.dictionaries(st.sampled_from(SCHEMA_KEYS), values, max_size=6))


@st.composite
def job_dicts(draw) -> dict:
    """An envelope that is mostly right, with random sections, keys and values."""
    job_type = draw(st.sampled_from([*SECTIONS, "nope"]))
    spec: dict = {
        "study": draw(st.one_of(st.just("staff"), scalars)),
        "type": job_type,
        "datasets": draw(st.one_of(
            st.just({"alpha": "staff", "beta": "staff"}),
            st.just(["urn:sdn:alpha:ds:staff"]),
            values)),
        job_type: _section(draw),
    }
    if draw(st.booleans()):
        spec["filter"] = draw(st.one_of(st.sampled_from(WORDS), st.text(max_size=80), scalars))
    extra = draw(st.dictionaries(keys, values, max_size=3))
    spec.update(extra)
    return spec


def _dump(data: object, form: str) -> str:
    if form == "json":
        return json.dumps(data, default=str)
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)  # libyaml: fast on big values
    return yaml.dump(data, Dumper=dumper, allow_unicode=True, sort_keys=False)


def _safe_dump(data: object, form: str) -> str | None:
    try:
        return _dump(data, form)
    except (ValueError, TypeError, RecursionError, yaml.YAMLError, UnicodeEncodeError):
        return None  # not representable in this form (a surrogate, a huge int in JSON)


def _mutate(text: str, draw) -> str:
    """Insert, delete or replace a few characters of a valid document."""
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(text)))
        op = draw(st.sampled_from(["insert", "delete", "replace"]))
        piece = draw(st.one_of(st.sampled_from(["[", "]", "{", "}", ":", "-", "&a ", "*a",
                                                "\n", "  ", "'", '"', "!!", "? ", "|", ">"]),
                               st.text(max_size=5)))
        if op == "insert":
            text = text[:i] + piece + text[i:]
        elif op == "delete":
            text = text[:i] + text[i + len(piece):]
        else:
            text = text[:i] + piece + text[i + 1:]
    return text


RAW_DOCUMENTS = [
    "[" * 50_000, "{a: " * 20_000, "- " * 20_000, "a:\n" + "".join(" " * i + "- \n"
                                                                    for i in range(1, 400)),
    "a: &a [*a]", "&a [*a, *a]", "a: *undefined", "a: 1\na: 2", "? [1]\n: 2", "--- 1\n--- 2",
    "a: !!python/object/apply:os.system ['true']", "\ufeffstudy: s", "study: s\x00",
    "a: |\n" + "  x\n" * 1000, "\n".join(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]"
                                         if i else "a0: &a0 [x]" for i in range(10)),
]


@st.composite
def job_texts(draw) -> str:
    choice = draw(st.integers(0, 4))
    if choice == 0:
        return draw(st.sampled_from(RAW_DOCUMENTS))
    if choice == 1:
        return draw(st.text(max_size=300))
    spec = draw(job_dicts())
    text = _safe_dump(spec, draw(st.sampled_from(["yaml", "json"])))
    if text is None:
        return draw(st.text(max_size=50))
    return _mutate(text, draw) if choice == 4 else text


# -- (a) job specs ------------------------------------------------------------------------
@FUZZ
@given(job_texts())
def test_job_text_parses_or_is_one_user_error(text):
    holds(load_job, text, "job.yaml")


@FUZZ
@given(job_dicts())
def test_job_json_parses_or_is_one_user_error(spec):
    holds(parse_job_dict, spec, "job j1")


# -- (a2) row filters, with the grid of a node that audits queries ----------------------
FILTER_COLUMNS = {"salary": "number", "age": "integer", "title": "string", "flag": "boolean"}
FILTER_GRID = {"salary": 1000.0, "age": None}
_numbers = st.one_of(st.integers(-10**30, 10**30), st.floats(allow_nan=True, allow_infinity=True),
                     st.sampled_from([0.1, 0.3, -0.0, 1e-300, 5e300, 53217.4, 53000, 1e3]))


@st.composite
def filters(draw) -> tuple[str, str]:
    """(column, random filter text over the grammar on that column: comparisons, chains,
    lists, boolean logic), now and then mutated into anything."""
    col = draw(st.sampled_from([*FILTER_COLUMNS, "nope"]))

    def atom() -> str:
        kind = draw(st.integers(0, 3))
        if kind == 0:
            return f"{col} {draw(st.sampled_from(['<', '<=', '>', '>=', '==', '!=']))} " \
                   f"{draw(_numbers)!r}"
        if kind == 1:
            a, b = sorted([draw(_numbers), draw(_numbers)], key=repr)
            return f"{a!r} < {col} <= {b!r}"
        if kind == 2:
            items = ", ".join(repr(draw(_numbers)) for _ in range(draw(st.integers(0, 4))))
            return f"{col} {draw(st.sampled_from(['in', 'not in']))} [{items}]"
        return f"{col} == {draw(st.text(max_size=8))!r}"
    expr = atom()
    for _ in range(draw(st.integers(0, 3))):
        expr = f"{draw(st.sampled_from(['', 'not ']))}({expr}) " \
               f"{draw(st.sampled_from(['and', 'or']))} {atom()}"
    return col, _mutate(expr, draw) if draw(st.integers(0, 5)) == 0 else expr


def _on_grid(value: object, step: float | None) -> bool:
    from decimal import Decimal, localcontext

    if isinstance(value, bool) or not isinstance(value, int | float) or value == 0:
        return True
    with localcontext() as ctx:
        ctx.prec = 10_000
        number = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
        if step is not None:
            return number % Decimal(repr(step)) == 0
        return number % Decimal(1).scaleb(number.adjusted() - 1) == 0


@FUZZ
@given(filters())
def test_filters_compile_on_the_grid_or_are_one_user_error(column_and_expr):
    """Any filter text compiles or is one short UserError; and where it compiles under the
    grid of a node that audits queries, every numeric constant lies on its column's grid."""
    from scifed.filters import compile_filter

    column, expr = column_and_expr
    compiled = holds(compile_filter, expr, FILTER_COLUMNS, FILTER_GRID)
    if isinstance(compiled, UserError) or column not in FILTER_GRID:
        return
    _, params = compiled
    numeric = [p for p in params if not isinstance(p, str | bool)]
    assert all(_on_grid(p, FILTER_GRID[column]) for p in numeric), (expr, params)


# -- (b) dataset metadata -----------------------------------------------------------------
PENGUINS = yaml.safe_load((REPO / "configs" / "datasets" / "penguins.yaml").read_text())


def _paths(data: object) -> list[tuple]:
    out: list[tuple] = []
    stack: list[tuple[tuple, object]] = [((), data)]
    while stack:
        path, value = stack.pop()
        out.append(path)
        if isinstance(value, dict):
            stack.extend(((*path, k), v) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend(((*path, i), v) for i, v in enumerate(value))
    return out


PENGUIN_PATHS = _paths(PENGUINS)
META_KEYS = sorted({str(p[-1]) for p in PENGUIN_PATHS if p and isinstance(p[-1], str)})


@st.composite
def metadata_texts(draw) -> str:
    choice = draw(st.integers(0, 5))
    if choice == 0:
        return draw(st.sampled_from(RAW_DOCUMENTS))
    if choice == 1:
        return draw(st.text(max_size=300))
    meta = copy.deepcopy(PENGUINS)
    for _ in range(draw(st.integers(1, 5))):
        path = draw(st.sampled_from(PENGUIN_PATHS[1:]))
        parent = meta
        try:
            for part in path[:-1]:
                parent = parent[part]
            op = draw(st.sampled_from(["set", "delete", "add"]))
            if op == "set":
                parent[path[-1]] = draw(meta_values)
            elif op == "delete":
                del parent[path[-1]]
            elif isinstance(parent, dict):
                parent[draw(st.one_of(st.sampled_from(META_KEYS), keys))] = draw(meta_values)
        except (KeyError, IndexError, TypeError):
            pass  # an earlier mutation removed or replaced the path
    text = _safe_dump(meta, "yaml")
    if text is None:
        return draw(st.text(max_size=50))
    return _mutate(text, draw) if choice == 5 else text


@FUZZ
@given(metadata_texts())
def test_metadata_parses_or_is_one_user_error(text):
    holds(load_metadata, text, "dataset.meta.yaml")


# -- (c) data files -----------------------------------------------------------------------
cells = st.one_of(
    st.sampled_from(["", "NA", "1", "-2.5", "1e308", "1e999", "nan", "inf", "true", "False",
                     "2024-01-31", "2024-13-45", "12:30:00", "2024-01-31T12:30:00Z",
                     '"quoted, comma"', '"un', 'a"b', "\t", "\r", "é", "\x00", "x" * 300]),
    st.integers().map(str), st.floats().map(str), st.text(max_size=10),
)


@st.composite
def csv_bytes(draw) -> bytes:
    choice = draw(st.integers(0, 3))
    if choice == 0:
        return draw(st.binary(max_size=400))
    width = draw(st.integers(1, 8))
    header = draw(st.lists(st.one_of(st.sampled_from(["a", "b", "a", "", "NA", '"x y"']),
                                     st.text(max_size=8)), min_size=width, max_size=width))
    rows = draw(st.lists(st.lists(cells, min_size=max(width - 1, 1), max_size=width + 1),
                         max_size=20))
    sep = draw(st.sampled_from([",", ",", ";", "\t"]))
    end = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    text = end.join(sep.join(row) for row in [header, *rows]) + draw(st.sampled_from(["", end]))
    data = text.encode("utf-8", "surrogatepass")
    return _mutate(text, draw).encode("utf-8", "surrogatepass") if choice == 3 else data


_names = itertools.count()


@FUZZ
@given(csv_bytes(), st.sampled_from([".csv", ".csv", ".tsv", ".parquet"]))
def test_data_files_profile_or_are_one_user_error(tmp_path_factory, content, suffix):
    path = tmp_path_factory.getbasetemp() / f"fuzz{next(_names)}{suffix}"
    path.write_bytes(content)
    try:
        holds(profile_file, path)
    finally:
        path.unlink()


# -- (d) typed task messages --------------------------------------------------------------
TASK_KEYS = sorted(set(ReleaseRequest.model_fields) | set(ComputeRequest.model_fields))
GOOD_TASK = {"job_id": "j1", "study_id": "s1", "key_version": 1, "job_type": "stats",
             "n_nodes": 2, "dataset": "staff", "spec": {"study": "staff"}, "k": 5,
             "contributors": ["alpha"], "aggregates": {"sum": "AAAA"}, "vocabularies": [],
             "researcher": "alice", "key_share": "", "stage": "final", "round": 0}


@st.composite
def task_payloads(draw, message: type[BaseModel]) -> bytes:
    """Random bytes, deep JSON, or a valid payload of ``message`` with keys dropped,
    added or given random values (and a few characters mutated)."""
    choice = draw(st.integers(0, 3))
    if choice == 0:
        return draw(st.binary(max_size=300))
    if choice == 1:
        depth = draw(st.integers(1, 100_000))
        return ('{"spec": ' + "[" * depth + "]" * depth + "}").encode()
    payload = {k: v for k, v in GOOD_TASK.items()
               if k in message.model_fields and draw(st.integers(0, 9))}
    payload.update(draw(st.dictionaries(st.one_of(st.sampled_from(TASK_KEYS), keys), values,
                                        max_size=3)))
    text = _safe_dump(payload, "json") or "{}"
    return (_mutate(text, draw) if choice == 3 else text).encode("utf-8", "surrogatepass")


MESSAGES = [TaskHeader, ComputeRequest, ReleaseRequest]


@FUZZ
@given(st.data(), st.sampled_from(MESSAGES))
def test_task_messages_parse_or_are_one_user_error(data, message):
    raw = data.draw(task_payloads(message), label="payload")
    parsed = holds(message.loads, raw, short=False)
    if isinstance(parsed, TaskHeader):  # the spec inside goes through the node's parser
        holds(parse_job_dict, parsed.spec, "job j1")


@pytest.mark.parametrize("message", MESSAGES)
def test_task_message_errors_are_short(message):
    """What the fuzzer found in the task messages (deterministic, one unknown long key)."""
    payload = {k: v for k, v in GOOD_TASK.items() if k in message.model_fields}
    holds(message.loads, json.dumps({**payload, "k" * 20_000: 1}))
