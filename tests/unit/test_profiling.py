"""Dataset profiling on the real Palmer penguins data, as CSV (with "NA") and Parquet."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import duckdb
import frictionless
import pandas as pd
import pytest
from palmerpenguins import load_penguins

from node.profiling import DataProfile, profile_file, read_table
from scifed.errors import UserError

MEASURES = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"]


@pytest.fixture(scope="module")
def penguins() -> pd.DataFrame:
    return load_penguins()


@pytest.fixture
def penguins_csv(tmp_path: Path, penguins: pd.DataFrame) -> Path:
    path = tmp_path / "penguins.csv"
    penguins.to_csv(path, index=False, na_rep="NA")
    return path


@pytest.fixture
def penguins_parquet(tmp_path: Path, penguins: pd.DataFrame) -> Path:
    path = tmp_path / "penguins.parquet"
    penguins.to_parquet(path, index=False)
    return path


def _columns(profile: DataProfile) -> dict:
    return {c.name: c for c in profile.columns}


def test_csv_profile_matches_pandas(penguins_csv: Path, penguins: pd.DataFrame) -> None:
    profile = profile_file(penguins_csv)
    cols = _columns(profile)

    assert profile.media_type == "text/csv"
    assert profile.row_count == 344
    assert profile.byte_size == penguins_csv.stat().st_size
    assert profile.sha256 == hashlib.sha256(penguins_csv.read_bytes()).hexdigest()
    assert list(cols) == list(penguins.columns)
    assert (cols["species"].type, cols["bill_length_mm"].type, cols["year"].type) == (
        "string",
        "number",
        "integer",
    )
    for measure in MEASURES:
        assert cols[measure].missing == 2
    assert cols["sex"].missing == 11
    assert cols["species"].distinct == 3
    # Free-text extremes are withheld from the profile; numeric ones are floats.
    assert cols["species"].min is None and cols["species"].max is None
    assert (cols["year"].min, cols["year"].max) == (2007.0, 2009.0)

    mass = penguins["body_mass_g"]
    assert math.isclose(cols["body_mass_g"].mean, mass.mean(), rel_tol=1e-9)
    assert math.isclose(cols["body_mass_g"].std, mass.std(ddof=1), rel_tol=1e-9)
    assert (cols["body_mass_g"].min, cols["body_mass_g"].max) == (mass.min(), mass.max())


def test_parquet_gives_the_same_stats(penguins_csv: Path, penguins_parquet: Path) -> None:
    from_csv, from_parquet = profile_file(penguins_csv), profile_file(penguins_parquet)
    assert from_parquet.media_type == "application/vnd.apache.parquet"
    assert from_parquet.row_count == from_csv.row_count
    assert from_parquet.sha256 == hashlib.sha256(penguins_parquet.read_bytes()).hexdigest()
    for a, b in zip(from_csv.columns, from_parquet.columns, strict=True):
        assert (a.name, a.type, a.missing, a.distinct, a.min, a.max) == (
            b.name,
            b.type,
            b.missing,
            b.distinct,
            b.min,
            b.max,
        )
        for x, y in ((a.mean, b.mean), (a.std, b.std)):
            assert (x is None and y is None) or math.isclose(x, y, rel_tol=1e-9)


def test_table_schema_is_valid_frictionless(penguins_csv: Path) -> None:
    descriptor = profile_file(penguins_csv).table_schema()
    schema = frictionless.Schema.from_descriptor(descriptor)
    assert schema.get_field("year").type == "integer"
    assert descriptor["missingValues"] == ["", "NA"]


def test_dates_reported_as_iso_strings(tmp_path: Path) -> None:
    path = tmp_path / "visits.csv"
    path.write_text("visit,at\n2024-03-01,2024-03-01 08:30:00\n2023-12-31,NA\n")
    cols = _columns(profile_file(path))
    assert (cols["visit"].type, cols["visit"].min, cols["visit"].max) == (
        "date",
        "2023-12-31",
        "2024-03-01",
    )
    assert (cols["at"].type, cols["at"].missing) == ("datetime", 1)


def test_read_table_is_a_queryable_source(penguins_csv: Path, penguins_parquet: Path) -> None:
    for path in (penguins_csv, penguins_parquet):
        sql = f"SELECT count(sex) FROM {read_table(path)}"
        assert duckdb.sql(sql).fetchall() == [(333,)]


def test_glob_characters_in_a_name_are_literal(tmp_path: Path) -> None:
    (tmp_path / "a1.csv").write_text("x\n1\n2\n")
    literal = tmp_path / "a[1].csv"
    literal.write_text("x\n1\n")
    assert profile_file(literal).row_count == 1


def test_malformed_csv_refused_not_repaired(tmp_path: Path) -> None:
    path = tmp_path / "ragged.csv"
    path.write_text("a,b,c\n1,2,3\n4,5,6,7\n8,9,10\n")
    with pytest.raises(UserError) as caught:
        profile_file(path)
    assert str(caught.value) == f"{path}: line 3: expected 3 columns, found 4"
    assert "4,5,6,7" not in str(caught.value)


def test_bad_row_after_the_sniffer_sample_refused(tmp_path: Path) -> None:
    path = tmp_path / "long.csv"
    rows = "".join(f"{i},x\n" for i in range(30_000))
    path.write_text(f"n,s\n{rows}1,2,3\n")
    with pytest.raises(UserError, match="line 30002: expected 2 columns, found 3"):
        profile_file(path)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.csv", "", "file is empty"),
        ("blank.csv", "\n\n", "header row is required"),
        ("data.xlsx", "a\n1\n", "unsupported file type '.xlsx'"),
        ("broken.parquet", "not parquet", "Parquet"),
    ],
)
def test_unusable_files_refused(tmp_path: Path, name: str, content: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(UserError, match=message) as caught:
        profile_file(path)
    assert str(caught.value).startswith(str(path))
    assert "\n" not in str(caught.value)


def test_missing_file_refused(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="missing.csv: no such file"):
        profile_file(tmp_path / "missing.csv")
