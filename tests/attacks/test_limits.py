"""Resource limits (jobs/limits.py, scifed/limits.py): each oversized input is refused with
one error that names the limit, quotes at most a short excerpt of the input, costs bounded
time and memory, and changes nothing (no job stored, no dataset registered, no audit entry).

The attacker's inputs: a 10,000-bin histogram (127 KiB of spec) that drove nodes to 7 GB,
a 5,000-column CSV that killed a node at registration, YAML nested past Python's recursion
limit, and column names and filters of 20 KiB echoed back in error messages.
"""

from __future__ import annotations

import json
import time
import tracemalloc
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from sqlalchemy import func, select
from staff import REPO, federation, stats

import node.profiling as profiling
from coordinator.db import Job
from jobs.limits import (
    MAX_GROUP_COLUMNS,
    MAX_HISTOGRAM_EDGES,
    MAX_JOB_COLUMNS,
    MAX_SPEC_BYTES,
    MAX_SPEC_DEPTH,
    MAX_TOTAL_HISTOGRAM_EDGES,
)
from jobs.spec import load_job, parse_job_dict
from node.datasets import DatasetRegistry
from node.store import NodeStore
from scifed.errors import UserError
from scifed.filters import compile_filter
from scifed.limits import EXCERPT_CHARS, MAX_DOCUMENT_DEPTH, MAX_FILE_COLUMNS
from scifed.record import load_metadata

LONG = 20 * 1024  # a 20 KiB name, filter or value
SHORT = 1000      # no message may be longer


@pytest.fixture(scope="module")
def staff(tmp_path_factory):
    fed, df = federation(tmp_path_factory.mktemp("staff"))
    yield fed
    fed.__exit__(None, None, None)


def _jobs(fed) -> int:
    with fed.coordinator.db.session() as s:
        return s.execute(select(func.count()).select_from(Job)).scalar_one()


def _refused(fed, spec_text: str) -> str:
    """Submit as the researcher; the one error, after checking that no job was stored."""
    before = _jobs(fed)
    with pytest.raises(UserError) as caught:
        fed.submit(spec_text)
    assert _jobs(fed) == before
    message = str(caught.value)
    assert len(message) <= SHORT, message[:300]
    assert "Traceback" not in message
    return message


def _short(message: str, secret: str) -> None:
    """The message names its problem in few characters, never the whole input."""
    assert len(message) <= SHORT, len(message)
    assert secret not in message
    assert secret[: EXCERPT_CHARS + 1] not in message


# -- job specs -----------------------------------------------------------------------------
def test_the_10000_bin_histogram_is_refused_at_submission_and_at_the_node(staff):
    edges = [round(i * 200_000 / 10_000, 1) for i in range(10_001)]
    text = stats(histograms={"salary": edges})
    assert len(text) > MAX_SPEC_BYTES  # the attacker's 127 KiB spec
    message = _refused(staff, text)
    assert f"{MAX_SPEC_BYTES // 1024} KiB (the limit)" in message

    # The same histogram compact enough to pass the size limit still names the bin limit,
    # at the coordinator (YAML) and at the node (the spec as JSON in a task).
    edges = list(range(10_001))
    compact = json.dumps(yaml.safe_load(stats(histograms={"salary": edges})),
                         separators=(",", ":"))
    assert len(compact) < MAX_SPEC_BYTES
    message = _refused(staff, compact)
    assert f"more than {MAX_HISTOGRAM_EDGES} bin edges in one histogram (the limit)" in message
    assert message.count("\n") == 0
    with pytest.raises(UserError, match=f"more than {MAX_HISTOGRAM_EDGES} bin edges"):
        parse_job_dict(json.loads(compact), "job j1")

    # Many histograms within the per-histogram limit meet the limit over all of them.
    columns = {c: list(range(MAX_HISTOGRAM_EDGES)) for c in ("age", "salary", "person_id")}
    message = _refused(staff, stats(histograms=columns))
    assert f"more than {MAX_TOTAL_HISTOGRAM_EDGES} bin edges over all histograms" in message


def test_too_many_columns_or_group_columns_are_refused(staff):
    many = [f"c{i}" for i in range(MAX_JOB_COLUMNS + 1)]
    message = _refused(staff, stats(columns=many))
    assert f"more than {MAX_JOB_COLUMNS} columns over columns" in message
    spread = stats(columns=many[:60], quantiles={c: [0.5] for c in many[60:]})
    assert f"more than {MAX_JOB_COLUMNS} columns" in _refused(staff, spread)
    groups = stats(group_counts=many[: MAX_GROUP_COLUMNS + 1])
    assert f"more than {MAX_GROUP_COLUMNS} group columns (the limit)" in _refused(staff, groups)


@pytest.mark.parametrize("depth", [MAX_SPEC_DEPTH + 1, 30_000])
def test_a_spec_nested_too_deep_is_refused_before_it_is_composed(staff, depth):
    head = "study: staff\ntype: stats\ndatasets: {alpha: staff}\nstats: "
    flow = head + "[" * depth + "]" * depth + "\n"  # 60 KB at 30,000 levels
    block = head + "\n" + "".join(f"{' ' * i}- \n" for i in range(1, min(depth, 300)))
    for text in (flow, block):
        assert len(text) <= MAX_SPEC_BYTES
        started = time.perf_counter()
        message = _refused(staff, text)
        assert time.perf_counter() - started < 2
        assert f"nested deeper than {MAX_SPEC_DEPTH} levels (the limit)" in message, message
    # a spec that travelled as JSON: checked without recursion as well
    nested: dict = {}
    inner = nested
    for _ in range(depth):
        inner["k"] = {}
        inner = inner["k"]
    with pytest.raises(UserError, match=f"nested deeper than {MAX_SPEC_DEPTH} levels"):
        parse_job_dict({"study": "staff", "type": "stats", "stats": nested})


def test_a_yaml_alias_bomb_is_refused(staff):
    lines = ["study: staff", "type: stats", "datasets: {alpha: staff}", "a0: &a0 [x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 8)}]" for i in range(1, 9)]
    lines.append("stats: {columns: *a8}")
    message = _refused(staff, "\n".join(lines) + "\n")
    assert "values (the limit" in message


def test_a_20_kib_filter_or_column_name_gives_a_short_message(staff):
    name = "n" * LONG
    _short(_refused(staff, stats(columns=["salary"], filter=f"{name} > 1")), name)
    _short(_refused(staff, stats(histograms={name: [1, 0]})), name)
    _short(_refused(staff, stats(group_counts=[name, name])), name)
    _short(_refused(staff, stats(columns=["salary"]).replace("study: staff",
                                                            f"study: staff\n{name}: 1")), name)
    quoted = "q" * 1900  # within the filter's 2,000 characters: an unknown column
    with pytest.raises(UserError) as caught:
        compile_filter(f"`{quoted}` > 1", {"salary": "number"})
    assert "unknown column" in str(caught.value)
    _short(str(caught.value), quoted)
    with pytest.raises(UserError) as caught:
        compile_filter(f"salary == '{quoted[:1800]}'", {"salary": "number"})
    _short(str(caught.value), quoted[:1800])


# -- registration --------------------------------------------------------------------------
@pytest.fixture
def registry(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    changes = []
    reg = DatasetRegistry(NodeStore(tmp_path / "node.db"), node_name="alpha",
                          platform="platform alpha", data_dir=data,
                          on_change=lambda: changes.append(1))
    reg.changes = changes
    return reg


def _meta() -> str:
    return (REPO / "configs" / "datasets" / "penguins.yaml").read_text()


def _untouched(reg: DatasetRegistry) -> None:
    """Nothing registered, audited or republished."""
    assert reg.list() == []
    assert reg.audit.entries() == []
    assert reg.changes == []


def _wide_csv(path: Path, columns: int, rows: int = 200) -> Path:
    with path.open("w") as f:
        f.write(",".join(f"c{i}" for i in range(columns)) + "\n")
        line = ",".join(f"{i % 97}.5" for i in range(columns)) + "\n"
        f.writelines(line for _ in range(rows))
    return path


def test_a_5000_column_csv_is_refused_from_its_header_in_bounded_time_and_memory(registry):
    _wide_csv(registry.data_dir / "wide.csv", 5000)
    tracemalloc.start()
    started = time.perf_counter()
    with pytest.raises(UserError) as caught:
        registry.add("wide.csv", _meta(), "wide.meta.yaml")
    elapsed = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert str(caught.value).endswith(f"more than {MAX_FILE_COLUMNS} columns (the limit), "
                                      "got 5000")
    assert elapsed < 0.5, elapsed
    assert peak < 8 << 20, peak  # the header, not the file (6 MB) or its profile
    _untouched(registry)


def test_a_wide_parquet_file_and_a_too_large_file_are_refused(registry, monkeypatch):
    table = pa.table({f"c{i}": [1.0] for i in range(MAX_FILE_COLUMNS + 1)})
    pq.write_table(table, registry.data_dir / "wide.parquet")
    with pytest.raises(UserError, match=f"more than {MAX_FILE_COLUMNS} columns .* got 1001"):
        registry.add("wide.parquet", _meta(), "wide.meta.yaml")
    nested = pa.table({"s": pa.array([{f"f{i}": 1 for i in range(MAX_FILE_COLUMNS + 1)}])})
    pq.write_table(nested, registry.data_dir / "nested.parquet")
    with pytest.raises(UserError, match=f"more than {MAX_FILE_COLUMNS} columns"):
        registry.add("nested.parquet", _meta(), "nested.meta.yaml")
    (registry.data_dir / "big.csv").write_text("a,b\n" + "1,2\n" * 1000)
    monkeypatch.setattr(profiling, "MAX_FILE_BYTES", 1024)
    with pytest.raises(UserError, match=r"larger than 1 KiB \(the limit\), got 4004 bytes"):
        registry.add("big.csv", _meta(), "big.meta.yaml")
    _untouched(registry)


def test_a_header_without_an_end_is_refused(registry, monkeypatch):
    monkeypatch.setattr(profiling, "MAX_HEADER_BYTES", 4096)
    (registry.data_dir / "endless.csv").write_text("a" * 10_000)
    with pytest.raises(UserError, match=r"header row longer than 4 KiB \(the limit\)"):
        registry.add("endless.csv", _meta(), "endless.meta.yaml")
    _untouched(registry)


def test_a_20_kib_column_name_in_the_data_gives_a_short_message(registry):
    name = "x" * LONG
    (registry.data_dir / "named.csv").write_text(f"{name},b\n1,2\n3,4\n")
    with pytest.raises(UserError) as caught:
        registry.add("named.csv", _meta(), "named.meta.yaml")
    _short(str(caught.value), name)
    _untouched(registry)


def test_metadata_too_large_or_too_deep_is_refused(registry):
    (registry.data_dir / "small.csv").write_text("a,b\n1,2\n")
    deep = "title: " + "{a: " * (MAX_DOCUMENT_DEPTH + 5) + "1" + "}" * (MAX_DOCUMENT_DEPTH + 5)
    with pytest.raises(UserError, match=f"nested deeper than {MAX_DOCUMENT_DEPTH} levels"):
        registry.add("small.csv", deep, "deep.meta.yaml")
    with pytest.raises(UserError, match=r"larger than 1024 KiB \(the limit\)"):
        load_metadata("title: " + "x" * (2 << 20), "big.meta.yaml")
    _untouched(registry)


def test_wide_files_are_profiled_as_narrow_ones(tmp_path, monkeypatch):
    """Above 32 columns distinct values are counted by unpivoting; same numbers."""
    frame = pd.DataFrame({
        **{f"n{i}": [1.5, None, 1.5, -0.0, 0.0, float(i)] for i in range(12)},
        **{f"i{i}": [1, 2, 2, None, 3, i] for i in range(12)},
        **{f"s{i}": ["a", "b", None, "a", "", f"v{i}"] for i in range(12)},
        "d": ["2024-01-01", "2024-01-02", None, "2024-01-01", "2024-03-01", "2024-01-02"],
        "t": [True, False, None, True, True, False],
        "empty": [None] * 6,
    })
    path = tmp_path / "mixed.csv"
    frame.to_csv(path, index=False, na_rep="NA")
    wide = profiling.profile_file(path)
    monkeypatch.setattr(profiling, "_INLINE_DISTINCT", 10_000)
    narrow = profiling.profile_file(path)
    assert len(wide.columns) > 32  # above the default _INLINE_DISTINCT
    assert wide == narrow
    # and a wide Parquet file with a nested column
    table = pa.Table.from_pandas(frame).append_column(
        "nested", pa.array([{"x": 1}] * 6))
    pq.write_table(table, tmp_path / "mixed.parquet")
    monkeypatch.setattr(profiling, "_INLINE_DISTINCT", 32)
    wide = profiling.profile_file(tmp_path / "mixed.parquet")
    monkeypatch.setattr(profiling, "_INLINE_DISTINCT", 10_000)
    assert wide == profiling.profile_file(tmp_path / "mixed.parquet")
    assert wide.columns[-1].distinct is None


@pytest.mark.parametrize("value", ["[" * 50_000, "{a: " * 15_000, "&a [*a]", "&b {x: *b}"])
def test_a_too_deep_job_yaml_never_reaches_the_recursion_limit(value):
    with pytest.raises(UserError, match=f"nested deeper than {MAX_SPEC_DEPTH} levels") as caught:
        load_job(f"study: s\ntype: stats\nx: {value}\n", "job.yaml")
    assert len(str(caught.value)) <= SHORT
