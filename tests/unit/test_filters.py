"""The job filter language: what compiles, what it means in DuckDB (checked against pandas
on the real penguins data), and everything it must refuse."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import duckdb
import pandas as pd
import pytest
import yaml

from node.profiling import profile_file, read_table
from scifed.errors import UserError
from scifed.filters import MAX_DEPTH, compile_filter
from scifed.record import build_record, load_metadata

TYPES = {"species": "string", "island": "string", "sex": "string", "year": "integer",
         "body_mass_g": "number", "bill_length_mm": "number", "bill_depth_mm": "number",
         "flag": "boolean", "day": "date"}


@pytest.fixture(scope="module")
def penguins_csv(tmp_path_factory, penguins: pd.DataFrame) -> tuple[Path, dict[str, str]]:
    path = tmp_path_factory.mktemp("filters") / "penguins.csv"
    penguins.to_csv(path, index=False)
    return path, {c.name: c.type for c in profile_file(path).columns}


def matched(path: Path, compiled: tuple[str, list]) -> int:
    sql, params = compiled
    with duckdb.connect() as con:
        return con.execute(f"SELECT count(*) FROM {read_table(path)} WHERE {sql}",
                           params).fetchone()[0]


def test_the_spec_example_compiles_to_parameters():
    sql, params = compile_filter(
        "sex == 'female' and (body_mass_g > 3000 or species in ['Adelie'])", TYPES)
    assert sql == '(("sex" = ?) AND (("body_mass_g" > ?) OR ("species" IN (?))))'
    assert params == ["female", 3000, "Adelie"]


@pytest.mark.parametrize("expr,expected", [
    ("3000 < body_mass_g <= 5000", ('((? < "body_mass_g") AND ("body_mass_g" <= ?))',
                                    [3000, 5000])),
    ("sex is None", ('("sex" IS NULL)', [])),
    ("sex is not None", ('("sex" IS NOT NULL)', [])),
    ("species not in ('Adelie', 'Gentoo')", ('("species" NOT IN (?, ?))',
                                             ["Adelie", "Gentoo"])),
    ("not flag", ('(NOT "flag")', [])),
    ("flag == True", ('("flag" = ?)', [True])),
    ("body_mass_g > -(-2.5)", ('("body_mass_g" > ?)', [2.5])),
    ("year != -1", ('("year" <> ?)', [-1])),
    ("bill_length_mm > bill_depth_mm", ('("bill_length_mm" > "bill_depth_mm")', [])),
    ("day >= '2013-01-01'", ('("day" >= ?)', ["2013-01-01"])),
])
def test_allowed_forms(expr, expected):
    assert compile_filter(expr, TYPES) == expected


@pytest.mark.parametrize("expr,mask", [
    ("sex == 'female' and body_mass_g > 3500",
     lambda d: (d.sex == "female") & (d.body_mass_g > 3500)),
    ("3000 < body_mass_g <= 4000 or species in ['Gentoo']",
     lambda d: ((d.body_mass_g > 3000) & (d.body_mass_g <= 4000)) | (d.species == "Gentoo")),
    ("not (island == 'Dream' or sex is None)",
     lambda d: ~((d.island == "Dream") | d.sex.isna())),
    ("species not in ['Adelie'] and year >= 2008",
     lambda d: (d.species != "Adelie") & (d.year >= 2008)),
    ("bill_length_mm > -1 and bill_depth_mm < bill_length_mm",
     lambda d: (d.bill_length_mm > -1) & (d.bill_depth_mm < d.bill_length_mm)),
    ("body_mass_g is None", lambda d: d.body_mass_g.isna()),
])
def test_compiled_filters_select_what_pandas_selects(penguins_csv, penguins, expr, mask):
    path, types = penguins_csv
    assert matched(path, compile_filter(expr, types)) == int(mask(penguins).sum())


def test_injection_in_a_string_stays_a_parameter(penguins_csv):
    path, types = penguins_csv
    evil = "x'); DROP TABLE t; --"
    sql, params = compile_filter(f'species == "{evil}" or island == \'Dream\'', types)
    assert evil not in sql and params == [evil, "Dream"]
    with duckdb.connect() as con:
        con.execute("CREATE TABLE t AS SELECT 1 AS a")
        n = con.execute(f"SELECT count(*) FROM {read_table(path)} WHERE {sql}", params)
        assert n.fetchone()[0] == 124
        assert con.execute("SELECT a FROM t").fetchall() == [(1,)]


def test_column_names_with_quotes_are_escaped(tmp_path):
    odd = 'it\'s "odd"'
    path = tmp_path / "odd.csv"
    pd.DataFrame({odd: [1, 5, 9], "`x`": ["a", "b", "c"]}).to_csv(path, index=False)
    types = {c.name: c.type for c in profile_file(path).columns}
    sql, params = compile_filter(f"`{odd}` > 2 and species_tag != '`x`'",
                                 {**types, "species_tag": "string"})
    assert sql == '(("it\'s ""odd""" > ?) AND ("species_tag" <> ?))'
    assert params == [2, "`x`"]  # a backtick inside a string is text, not a column
    assert matched(path, compile_filter(f"`{odd}` > 2", types)) == 2


@pytest.mark.parametrize("expr,needle", [
    ("open('x') == 1", "function calls are not allowed (`open(...)`)"),
    ("__import__('os').system('id') == 0", "function calls are not allowed"),
    ("body_mass_g.real > 1", "attribute access is not allowed"),
    ("species[0] == 'A'", "subscripts are not allowed"),
    ("body_mass_g * 2 > 7000", "arithmetic is not allowed"),
    ("(lambda: 1) == 1", "lambdas are not allowed"),
    ("species == f'{island}'", "f-strings are not allowed"),
    ("(x := 3) > 1", "assignment expressions (:=) are not allowed"),
    ("[s for s in species] == 1", "comprehensions are not allowed"),
    ("body_mass_g > 1 if flag else 2", "conditional expressions are not allowed"),
    ("mass > 3000", "unknown column 'mass'"),
    ("species > 3", "column 'species' is string; it cannot be compared with a number"),
    ("body_mass_g == 'heavy'", "column 'body_mass_g' is number; it cannot be compared with "
                               "a string"),
    ("species in ['Adelie', 3]", "column 'species' is string"),
    ("flag == 1", "column 'flag' is boolean"),
    ("body_mass_g > True", "column 'body_mass_g' is number"),
    ("species == body_mass_g", "cannot compare column 'species' (string) with column "
                               "'body_mass_g' (number)"),
    ("body_mass_g == None", "compare with None using `is None`"),
    ("species in ['Adelie', None]", "None cannot be in an `in` list"),
    ("species in island", "`in` needs a list of values"),
    ("species in []", "`in` needs a non-empty list"),
    ("species is 'Adelie'", "`is` / `is not` only test for None"),
    ("1 < 2", "a comparison needs a column on one side"),
    ("body_mass_g", "column 'body_mass_g' is number, not boolean"),
    ("-species > 1", "expected a value here, not a column"),
    ("body_mass_g > -'a'", "unary minus applies to numbers only"),
    ("body_mass_g > b'1'", "only numbers, strings, True/False and None"),
    ("species ==", "not a valid expression"),
    ("`species", "unterminated `quoted column name`"),
    ("", "empty expression"),
])
def test_refused_with_a_reason(expr, needle):
    with pytest.raises(UserError) as exc:
        compile_filter(expr, TYPES)
    message = str(exc.value)
    assert message.startswith("filter: ") and needle in message


def test_depth_and_length_limits():
    deep_ok = "not " * (MAX_DEPTH - 1) + "flag"
    assert compile_filter(deep_ok, TYPES)[0].count("NOT") == MAX_DEPTH - 1
    with pytest.raises(UserError, match="nested deeper than 32"):
        compile_filter("not " * MAX_DEPTH + "flag", TYPES)
    with pytest.raises(UserError, match="nested deeper than 32|not a valid expression"):
        compile_filter("(" * 300 + "flag" + ")" * 300, TYPES)
    long = " or ".join(["year == 2007"] * 200)
    with pytest.raises(UserError, match="longer than 2000 characters"):
        compile_filter(long, TYPES)


# -- the grid of numeric thresholds (where the node audits queries) --------------------
# body_mass_g declares a resolution of 50 g, bill_length_mm one of 0.1 mm, year one of
# 0.5; bill_depth_mm declares none (2 significant digits); sex and flag are not numeric.
GRID = {"body_mass_g": 50.0, "bill_length_mm": 0.1, "year": 0.5, "bill_depth_mm": None}
NO_RESOLUTION = "at most 2 significant digits; the column declares no resolution"


def test_without_a_grid_any_threshold_compiles():
    """G1: no query auditing, so no coarsening (the demo's utility stays)."""
    expr = "body_mass_g > 3217.4 and bill_depth_mm in [17.123, -0.0001] and year != 2007"
    assert compile_filter(expr, TYPES)[1] == compile_filter(expr, TYPES, None)[1] \
        == [3217.4, 17.123, -0.0001, 2007]


@pytest.mark.parametrize("expr,params", [
    ("body_mass_g > 3250", [3250]),                       # on the declared grid of 50
    ("body_mass_g <= -3250.0", [-3250.0]),
    ("3000 < body_mass_g <= 5000", [3000, 5000]),
    ("body_mass_g in [3500, 3550, 0]", [3500, 3550, 0]),
    ("bill_length_mm > 0.3", [0.3]),                     # exact decimals: 0.3 is 3 × 0.1
    ("bill_length_mm >= 45.7 and bill_length_mm < -1.1", [45.7, -1.1]),
    ("year == 2007", [2007]),                             # an integer on a grid below 1
    ("year >= 2007.5", [2007.5]),
    ("bill_depth_mm > 17", [17]),                         # 2 significant digits
    ("bill_depth_mm < 0.012", [0.012]),
    ("bill_depth_mm not in [7, 120, 53000, -0.95, 1e-9]", [7, 120, 53000, -0.95, 1e-9]),
    ("bill_depth_mm > 0.0 or body_mass_g != -0 or bill_length_mm > 0", [0.0, 0, 0]),
    ("bill_length_mm > bill_depth_mm", []),               # no constant: nothing to coarsen
    ("sex == 'female' and flag == True", ["female", True]),
])
def test_thresholds_on_the_grid_compile(expr, params):
    assert compile_filter(expr, TYPES, GRID)[1] == params


@pytest.mark.parametrize("expr,message", [
    ("body_mass_g > 3217.4", "body_mass_g threshold 3217.4 is not on the column's grid "
                             "(steps of 50, its declared resolution); use 3200 or 3250"),
    ("body_mass_g > -3217.4", "body_mass_g threshold -3217.4 is not on the column's grid "
                              "(steps of 50, its declared resolution); use -3250 or -3200"),
    ("3217.4 < body_mass_g", "body_mass_g threshold 3217.4 is not on the column's grid "
                             "(steps of 50, its declared resolution); use 3200 or 3250"),
    ("3000 < body_mass_g <= 5010", "body_mass_g threshold 5010 is not on the column's grid "
                                   "(steps of 50, its declared resolution); use 5000 or 5050"),
    ("body_mass_g == 3201", "body_mass_g value 3201 is not on the column's grid (steps of "
                            "50, its declared resolution); use 3200 or 3250"),
    ("body_mass_g in [3200, 3201]", "body_mass_g value 3201 is not on the column's grid "
                                    "(steps of 50, its declared resolution); use 3200 or "
                                    "3250"),
    ("bill_length_mm > 45.75", "bill_length_mm threshold 45.75 is not on the column's grid "
                               "(steps of 0.1, its declared resolution); use 45.7 or 45.8"),
    ("year != 2007.25", "year value 2007.25 is not on the column's grid (steps of 0.5, its "
                        "declared resolution); use 2007 or 2007.5"),
    ("bill_depth_mm > 17.5", f"bill_depth_mm threshold 17.5 is not on the column's grid "
                             f"({NO_RESOLUTION}); use 17 or 18"),
    ("bill_depth_mm > 53217.4", f"bill_depth_mm threshold 53217.4 is not on the column's "
                                f"grid ({NO_RESOLUTION}); use 53000 or 54000"),
    ("bill_depth_mm < -0.0125", f"bill_depth_mm threshold -0.0125 is not on the column's "
                                f"grid ({NO_RESOLUTION}); use -0.013 or -0.012"),
    ("bill_depth_mm < 99.5", f"bill_depth_mm threshold 99.5 is not on the column's grid "
                             f"({NO_RESOLUTION}); use 99 or 100"),
    ("bill_depth_mm not in [7, 123]", f"bill_depth_mm value 123 is not on the column's grid "
                                      f"({NO_RESOLUTION}); use 120 or 130"),
    ("bill_depth_mm > - 1.05", f"bill_depth_mm threshold -1.05 is not on the column's grid "
                               f"({NO_RESOLUTION}); use -1.1 or -1"),
    ("body_mass_g > 1e999", "body_mass_g threshold 1e999 is not on the column's grid (steps "
                            "of 50, its declared resolution): it is not a finite number"),
])
def test_thresholds_off_the_grid_are_refused_naming_the_nearest_grid_values(expr, message):
    with pytest.raises(UserError) as exc:
        compile_filter(expr, TYPES, GRID)
    assert str(exc.value) == f"filter: {message}"


def test_a_numeric_column_the_grid_does_not_list_gets_two_significant_digits():
    with pytest.raises(UserError, match=re.escape(f"({NO_RESOLUTION}); use 3200 or 3300")):
        compile_filter("body_mass_g > 3217.4", TYPES, {})
    assert compile_filter("body_mass_g > 3200", TYPES, {})[1] == [3200]


def test_the_grid_refusal_names_only_the_constant_and_values_made_from_it():
    """The refusal depends on the metadata and the constant alone, so it tells nothing
    about the data: every number in it is the constant, the step or a neighbour."""
    for expr, allowed in (("body_mass_g >= 4321.99", {"4321.99", "50", "4300", "4350"}),
                          ("bill_depth_mm >= 4321.99", {"4321.99", "2", "4300", "4400"})):
        with pytest.raises(UserError) as exc:
            compile_filter(expr, TYPES, GRID)
        assert set(re.findall(r"-?\d+(?:\.\d+)?", str(exc.value))) == allowed, exc.value
    huge = "9" * 1500  # the researcher's text is quoted as an excerpt, the message stays short
    with pytest.raises(UserError) as exc:
        compile_filter(f"bill_depth_mm < {huge}", TYPES, GRID)
    assert len(str(exc.value)) < 300 and "use 9.9E+1499 or 1E+1500" in str(exc.value)


def test_a_declared_resolution_reaches_the_record_and_must_be_positive(
        tmp_path, penguins, penguins_meta):
    path = tmp_path / "penguins.csv"
    penguins.to_csv(path, index=False)
    meta = copy.deepcopy(penguins_meta)
    meta["fields"]["body_mass_g"]["resolution"] = 50
    record = build_record(load_metadata(yaml.safe_dump(meta), "penguins.yaml"),
                          profile_file(path), node_id="alpha", platform_id="alpha-lab",
                          slug="penguins")
    fields = {f["name"]: f for f in record.model_dump(mode="json")["fields"]}
    assert fields["body_mass_g"]["resolution"] == 50 and fields["year"]["resolution"] is None
    for bad in (0, -1, "1e3", True):
        meta["fields"]["body_mass_g"]["resolution"] = bad
        with pytest.raises(UserError, match="fields.body_mass_g.resolution"):
            load_metadata(yaml.safe_dump(meta), "penguins.yaml")



def test_under_the_grid_text_is_not_ordered_and_dates_take_whole_months():
    cols = {"office": "string", "hired": "date", "salary": "number"}
    grid = {"salary": 1000.0}
    for expr in ("office < 'R3'", "'R3' >= office"):
        with pytest.raises(UserError, match="office is text"):
            compile_filter(expr, cols, grid)
    with pytest.raises(UserError, match="first of a month, e.g. '2019-03-01'"):
        compile_filter("hired < '2019-03-14'", cols, grid)
    assert compile_filter("hired < '2019-03-01' and office == 'R3'", cols, grid)[1] == \
        ["2019-03-01", "R3"]
    assert compile_filter("office < 'R3'", cols)[1] == ["R3"]  # G1: no grid
