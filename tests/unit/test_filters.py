"""The job filter language: what compiles, what it means in DuckDB (checked against pandas
on the real penguins data), and everything it must refuse."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pandas as pd
import pytest

from node.profiling import profile_file, read_table
from scifed.errors import UserError
from scifed.filters import MAX_DEPTH, compile_filter

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
