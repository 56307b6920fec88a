"""The `quality` job in a plaintext simulation of the federation: penguins split by island
and Seattle weather by year into node files, node vectors summed with numpy as the
coordinator sums ciphertexts, decoded at release and compared with pandas / scipy on the
pooled data (governance §3.4, §3.5)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy.spatial.distance import jensenshannon
from test_quality import seattle_meta
from vega_datasets import data as vega

from jobs.quality.compute import QualityLayout, compute, decode, js_distance, vocabulary
from jobs.quality.spec import QualitySpec
from jobs.spec import load_job
from jobs.stats.compute import suppress_table
from node.data import DataFile
from node.profiling import profile_file
from scifed.errors import UserError
from scifed.record import CatalogRecord, build_record, load_metadata

PENGUIN_LABELS = ["Adelie", "Chinstrap", "Gentoo"]
WEATHER = ["drizzle", "fog", "rain", "snow", "sun"]


def shard(root: Path, node: str, frame: pd.DataFrame,
          meta: dict[str, Any]) -> tuple[Path, CatalogRecord]:
    path = root / f"{node}.csv"
    frame.to_csv(path, index=False)
    record = build_record(load_metadata(yaml.safe_dump(meta, allow_unicode=True), "m.yaml"),
                          profile_file(path), node_id=node, platform_id=f"{node}-lab",
                          slug="shard")
    return path, record


def federate(shards: list[tuple[Path, CatalogRecord]], spec: QualitySpec,
             k: int = 1) -> tuple[dict, list[np.ndarray], dict[str, list[str]]]:
    """Vocabulary union, one vector per node, their sum and the release decode."""
    parts = [vocabulary(DataFile(path), record, spec) for path, record in shards]
    vocab = {key: sorted(set().union(*(p[key] for p in parts))) for key in parts[0]}
    vectors = [compute(DataFile(path), record, spec, vocab, k=k) for path, record in shards]
    return decode(np.sum(vectors, axis=0), spec, vocab, k=k), vectors, vocab


@pytest.fixture(scope="module")
def islands(tmp_path_factory, penguins, penguins_meta):
    root = tmp_path_factory.mktemp("islands")
    return [shard(root, island.lower(), part, penguins_meta)
            for island, part in penguins.groupby("island")]


@pytest.fixture(scope="module")
def weather() -> pd.DataFrame:
    frame = vega.seattle_weather()
    return frame.assign(year=frame.date.dt.year)


@pytest.fixture(scope="module")
def years(tmp_path_factory, weather):
    root = tmp_path_factory.mktemp("years")
    return [shard(root, f"y{year}", part.drop(columns="year"), seattle_meta())
            for year, part in weather.groupby("year")]


def metric(result: dict, name: str) -> tuple[Any, str]:
    return result["metrics"][name]["value"], result["metrics"][name]["status"]


def js_by_node(table: pd.DataFrame) -> dict[Any, float]:
    pooled = table.sum() / table.to_numpy().sum()
    return {i: float(jensenshannon(table.loc[i] / table.loc[i].sum(), pooled, base=2))
            for i in table.index}


def test_penguins_by_island_pool_like_pandas(islands, penguins):
    result, _, vocab = federate(islands, QualitySpec())
    assert result["nodes"] == ["biscoe", "dream", "torgersen"]
    assert result["rows"] == len(penguins)
    assert metric(result, "Q1a") == (
        pytest.approx(1 - penguins.isna().sum().sum() / penguins.size), "pass")
    for column, value in result["completeness"].items():
        assert value == pytest.approx(1 - penguins[column].isna().mean())
    assert metric(result, "Q1c") == (1.0, "pass")
    assert metric(result, "Q3b") == (0.0, "pass")
    counts = penguins.species.value_counts()
    assert result["classes"] == {"labels": PENGUIN_LABELS,
                                 "counts": [int(counts[s]) for s in PENGUIN_LABELS],
                                 "suppressed": [False] * 3}
    p = counts / counts.sum()
    assert metric(result, "Q5a")[0] == pytest.approx(float(-(p * np.log(p)).sum() / np.log(3)))
    assert metric(result, "Q5b")[0] == pytest.approx(counts.max() / counts.min())
    assert metric(result, "Q5c") == (68, "pass")
    # Species live on different islands by design: non-IID, informational (§3.5: 0.599).
    expected = js_by_node(pd.crosstab(penguins.island, penguins.species))
    per_node = result["label_shift"]["per_node"]
    assert per_node == {n.lower(): pytest.approx(d, abs=1e-12) for n, d in expected.items()}
    assert metric(result, "Q4d") == (pytest.approx(0.599, abs=5e-4), "warn")
    assert metric(result, "Q4c") == (True, "pass")
    mass = result["moments"]["body_mass_g"]
    assert mass["n"] == 342 and mass["mean"] == pytest.approx(4201.754, abs=1e-3)
    assert mass["std"] ** 2 == pytest.approx(penguins.body_mass_g.var(), rel=1e-12)
    assert vocab["schema_hashes"] == [islands[0][1].schema_hash]
    assert result["suppression"] == {"k": 1, "small_nodes": 0, "class_rows": [],
                                     "classes": [], "moments": []}


def test_seattle_by_year_flags_the_labelling_drift(years, weather):
    result, vectors, vocab = federate(years, QualitySpec())
    table = pd.crosstab(weather.year, weather.weather)
    expected = js_by_node(table)
    assert result["label_shift"]["per_node"] == {
        f"y{year}": pytest.approx(d, abs=1e-12) for year, d in expected.items()}
    value, status = metric(result, "Q4d")
    assert value == pytest.approx(0.447, abs=5e-4) and status == "warn"  # 2012 vs the rest
    assert "largest at y2012" in result["metrics"]["Q4d"]["detail"]
    assert result["classes"]["counts"] == [int(table[w].sum()) for w in WEATHER]
    assert metric(result, "Q5a") == (pytest.approx(0.746, abs=5e-4), "warn")
    assert metric(result, "Q5c") == (23, "warn")
    assert metric(result, "Q1a") == (1.0, "pass")
    # Each node filled only its own row of the class block.
    layout = QualityLayout.build(QualitySpec(), vocab)
    assert layout.classes is not None
    for i, vec in enumerate(vectors):
        rows = vec[layout.classes].reshape(len(years), len(WEATHER))
        assert np.count_nonzero(rows.sum(axis=1)) == 1 and rows[i].sum() == 365 + (i == 0)


def test_pooled_duplicates_count_within_nodes_only(tmp_path, penguins, penguins_meta):
    biscoe = penguins[penguins.island == "Biscoe"]
    dream = penguins[penguins.island == "Dream"]
    doubled = pd.concat([biscoe, biscoe.head(4), biscoe.head(1)])
    shards = [shard(tmp_path, "biscoe", doubled, penguins_meta),
              shard(tmp_path, "dream", pd.concat([dream, biscoe.head(2)]), penguins_meta)]
    result, _, _ = federate(shards, QualitySpec())
    within = doubled.duplicated().sum()
    assert within == 5
    assert metric(result, "Q3b") == (pytest.approx(within / (len(doubled) + len(dream) + 2)),
                                     "warn")
    assert "across nodes are not seen" in result["metrics"]["Q3b"]["detail"]


def test_a_shard_with_another_schema_fails_compatibility(tmp_path, penguins, penguins_meta):
    grams = {**penguins_meta, "fields": {**penguins_meta["fields"], "body_mass_g": {
        **penguins_meta["fields"]["body_mass_g"], "unit": "kg"}}}
    no_sex = {**penguins_meta, "fields": {k: v for k, v in penguins_meta["fields"].items()
                                          if k != "sex"}}
    parts = dict(tuple(penguins.groupby("island")))
    shards = [shard(tmp_path, "biscoe", parts["Biscoe"], penguins_meta),
              shard(tmp_path, "dream", parts["Dream"], grams),
              shard(tmp_path, "torgersen", parts["Torgersen"].drop(columns="sex"), no_sex)]
    result, _, _ = federate(shards, QualitySpec())
    value, status = metric(result, "Q4c")
    assert (value, status) == (False, "fail")
    assert result["metrics"]["Q4c"]["detail"].startswith("3 different schema_hash values")
    assert sorted(result["schemas"].values()) == [1, 1, 1]
    # Torgersen has no sex column: its 52 rows count as missing there.
    sex_missing = parts["Biscoe"].sex.isna().sum() + parts["Dream"].sex.isna().sum() + 52
    assert result["completeness"]["sex"] == pytest.approx(1 - sex_missing / len(penguins))


def test_small_cells_are_suppressed_at_each_node_and_at_release(years, weather):
    k = 5
    result, vectors, vocab = federate(years, QualitySpec(), k=k)
    layout = QualityLayout.build(QualitySpec(), vocab)
    assert layout.classes is not None
    table = pd.crosstab(weather.year, weather.weather)[WEATHER]
    shown = []
    for i, (year, row) in enumerate(table.iterrows()):
        cells = row.to_numpy(dtype=float)
        cells[suppress_table(cells, k)] = 0.0
        sent = vectors[i][layout.classes].reshape(len(years), len(WEATHER))[i]
        assert sent.tolist() == cells.tolist(), year
        shown.append(cells)
    # 2013 had 2 snow days (hidden with drizzle, its smallest other cell); 2014 had 3 rain
    # days (hidden with fog); 2015's 5 rain days are not under k.
    assert result["suppression"]["class_rows"] == ["y2013", "y2014"]
    pooled = np.sum(shown, axis=0)
    assert result["classes"]["counts"] == pooled.astype(int).tolist()
    assert result["label_shift"]["per_node"]["y2013"] == pytest.approx(
        jensenshannon(shown[1] / shown[1].sum(), pooled / pooled.sum(), base=2))


def test_pooled_cells_under_k_withhold_the_balance_values(years):
    # Nodes whose policy needs no threshold, a release node that applies k = 30.
    spec = QualitySpec()
    _, vectors, vocab = federate(years, spec, k=1)
    result = decode(np.sum(vectors, axis=0), spec, vocab, k=30)
    assert result["classes"]["counts"][WEATHER.index("snow")] is None  # 23 snow days
    assert result["suppression"]["classes"] == ["drizzle", "snow"]  # drizzle protects snow
    unhidden = decode(np.sum(vectors, axis=0), spec, vocab, k=1)
    for name in ("Q5a", "Q5b", "Q5c"):
        value, status = metric(result, name)  # the value is withheld, its status is not
        assert value is None and status == metric(unhidden, name)[1]
        assert "withheld" in result["metrics"][name]["detail"]


def test_a_node_under_k_rows_sends_only_its_flag(islands, penguins):
    result, vectors, _ = federate(islands, QualitySpec(), k=60)
    assert result["rows"] == len(penguins) - 52  # Torgersen's 52 rows stay home
    assert result["suppression"]["small_nodes"] == 1
    assert result["nodes"] == ["biscoe", "dream", "torgersen"]
    assert result["label_shift"]["per_node"]["torgersen"] is None
    assert np.count_nonzero(vectors[2]) == 3  # flag, position, schema hash


def test_jensen_shannon_matches_scipy():
    rng = np.random.default_rng(0)
    for _ in range(20):
        p, q = rng.integers(0, 50, 6).astype(float), rng.integers(1, 50, 6).astype(float)
        assert js_distance(p, q) == pytest.approx(jensenshannon(p, q, base=2), abs=1e-12)
    assert js_distance(np.array([1.0, 0.0]), np.array([0.0, 1.0])) == 1.0


def test_layout_is_a_function_of_spec_and_vocabulary(islands):
    spec = QualitySpec(columns=["body_mass_g", "sex"])
    parts = [vocabulary(DataFile(path), record, spec) for path, record in islands]
    assert parts[0]["columns"] == ["body_mass_g", "sex"]
    assert parts[0]["numeric"] == ["body_mass_g"]
    vocab = {key: sorted(set().union(*(p[key] for p in parts))) for key in parts[0]}
    layout = QualityLayout.build(spec, vocab)
    # header 3 + 2 missing + target 1 + 4 moments + 1 hash + 3 nodes + 3×3 classes + 3 flags
    assert layout.size == 3 + 2 + 1 + 4 + 1 + 3 + 9 + 3
    no_target = {**vocab, "target": [], "labels": []}
    with pytest.raises(ValueError, match="the vocabulary's target is None"):
        QualityLayout.build(spec.model_copy(update={"target": "species"}), no_target)
    assert QualityLayout.build(QualitySpec(columns=["sex"]), {
        **no_target, "columns": ["sex"], "numeric": []}).size == 3 + 1 + 1 + 3
    with pytest.raises(ValueError, match="the vocabulary's columns"):
        QualityLayout.build(QualitySpec(columns=["sex"]), vocab)
    with pytest.raises(UserError, match="name different targets"):
        QualityLayout.build(spec, {**vocab, "target": ["sex", "species"]})
    with pytest.raises(ValueError, match="lacks labels"):
        QualityLayout.build(spec, {k: v for k, v in vocab.items() if k != "labels"})


def test_node_side_checks(islands):
    path, record = islands[0]
    with pytest.raises(UserError, match="quality.columns: unknown column\\(s\\) 'beak'"):
        vocabulary(DataFile(path), record, QualitySpec(columns=["beak"]))
    with pytest.raises(UserError, match="quality.target: unknown column 'colour'"):
        vocabulary(DataFile(path), record, QualitySpec(target="colour"))
    vocab = vocabulary(DataFile(path), record, QualitySpec())
    with pytest.raises(UserError, match="outside the agreed vocabulary"):
        compute(DataFile(path), record, QualitySpec(), {**vocab, "labels": ["Adelie"]}, k=1)
    with pytest.raises(ValueError, match="not among the job's nodes"):
        compute(DataFile(path), record, QualitySpec(), {**vocab, "nodes": ["elsewhere"]}, k=1)


def test_corrupted_aggregates_are_refused(islands):
    spec = QualitySpec()
    _, vectors, vocab = federate(islands, spec)
    total = np.sum(vectors, axis=0)
    with pytest.raises(ValueError, match="shape"):
        decode(total[:-1], spec, vocab, k=1)
    bad = total.copy()
    bad[QualityLayout.ROWS] += 0.5
    with pytest.raises(ValueError, match="corrupted aggregate: rows"):
        decode(bad, spec, vocab, k=1)
    twice = total + vectors[0]
    with pytest.raises(ValueError, match="contributed twice"):
        decode(twice, spec, vocab, k=1)


JOB = "study: s\ntype: quality\ndatasets: {biscoe: penguins, dream: penguins}\n"


def test_quality_job_spec():
    spec = load_job(JOB + "quality: {target: species, columns: [sex, body_mass_g]}\n", "j")
    assert spec.quality == QualitySpec(target="species", columns=["sex", "body_mass_g"])
    assert spec.referenced_columns() == ["species", "sex", "body_mass_g"]
    assert load_job(JOB + "quality: {}\n", "j").referenced_columns() == []
    for text, message in [
        (JOB, "a 'quality' job needs a 'quality:' section"),
        (JOB + "quality: {}\nstats: {columns: [x]}\n", "a 'quality' job takes no 'stats:'"),
        (JOB + "quality: {}\nfilter: year > 2007\n", "remove 'filter'"),
        (JOB + "quality: {columns: [sex, sex]}\n", "duplicate column: sex"),
        (JOB + "quality: {weights: x}\n", "quality.weights: Extra inputs"),
    ]:
        with pytest.raises(UserError, match=message):
            load_job(text, "j")
