"""``examples/determined/``: a Determined PyTorchTrial (as a class entrypoint and through the Trainer),
and a Core API script (alone and on 2 ranks), run unchanged by ``hpo-slurm launch`` on the local
executor, with no ``determined`` package installed."""

from __future__ import annotations

import pytest
import yaml

pytest.importorskip("torch")
pytest.importorskip("sklearn")

from determined_examples import DETERMINED_EXAMPLES, finished_search  # noqa: E402
from driver_helpers import cli, copy_example, write_config  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture
def no_gpu_override(monkeypatch):
    monkeypatch.delenv("HPO_SLURM_LOCAL_GPUS", raising=False)


@pytest.mark.parametrize("example", DETERMINED_EXAMPLES)
def test_every_determined_example_runs_unchanged_on_the_local_executor(tmp_path, no_gpu_override, example):
    folder = copy_example("determined", tmp_path)
    config = folder / f"{example}.yaml"
    if "adaptive" in example:  # fewer trials: the same rungs, half the time
        config = write_config(config, folder / f"small_{example}.yaml", searcher={"max_trials": 4})
    root = tmp_path / "runs"
    done = cli("launch", str(config), "--root", str(root), "--executor", "local", timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = finished_search(root, yaml.safe_load(config.read_text())["name"])
    assert summary["best"] is not None
    if "adaptive" in example:
        assert len(summary["trials"]) == 4
        continued = [run for trial in summary["trials"] for run in trial["runs"] if run["from_length"] > 0]
        assert continued, "no trial was promoted"

