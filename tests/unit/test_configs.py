"""The examples in configs/ are what users copy: each must load as the code expects."""

from pathlib import Path

import pytest

from jobs.spec import load_job
from node.policy import effective, load_override
from scifed.config import CoordinatorConfig, NodeConfig, load_config
from scifed.record import load_metadata

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_node_and_coordinator_configs_load():
    assert load_config(CONFIGS / "node.yaml", NodeConfig).name == "biscoe"
    assert load_config(CONFIGS / "coordinator.yaml", CoordinatorConfig).heartbeat_seconds == 5


@pytest.mark.parametrize("path", sorted((CONFIGS / "jobs").glob("*.yaml")), ids=lambda p: p.name)
def test_job_examples_validate(path):
    assert load_job(path.read_text(), str(path)).study == "penguin-morphology"


@pytest.mark.parametrize("path", sorted((CONFIGS / "datasets").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_dataset_metadata_examples_validate(path):
    assert load_metadata(path.read_text(), str(path)).license


def test_policy_override_example_tightens_a_g3_dataset():
    override = load_override((CONFIGS / "policy-override.yaml").read_text(), "example")
    assert effective("G3", "CONDITIONAL", override).min_cell_count == 10


def test_model_load_of_a_non_model_file_is_one_clear_error(tmp_path):
    import pytest as _pytest

    from jobs.train.models import load_model_file
    from scifed.errors import UserError

    bad = tmp_path / "notes.pt"
    bad.write_text("not a model")
    for path, needle in ((bad, "not a scifed model file"), (tmp_path / "gone.pt", "cannot read")):
        with _pytest.raises(UserError, match=needle):
            load_model_file(path)
