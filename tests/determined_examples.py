"""What the tests of ``examples/determined/`` check of a finished search: every run that succeeded
validated at its target, and every continuation resumed from its trial's checkpoint (its training
reports start after the length it continued from)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List

from driver_helpers import status
from helpers_spec import trial_metrics

DETERMINED_EXAMPLES = ("const", "adaptive", "legacy_adaptive", "core_api_adaptive", "distributed")


def finished_search(root: Path, name: str) -> Dict[str, Any]:
    """The status of a search that completed, after checking each of its runs: a succeeded run
    validated at (or, for a script that chooses its own validation points, past) its target, and a
    continuation reported nothing at or before the length it resumed from."""
    summary = status(root, name)
    assert summary["state"] == "COMPLETED", summary["state"]
    experiment = root / summary["folder"]
    for trial in summary["trials"]:
        assert trial["state"] in ("COMPLETED", "STOPPED_EARLY"), trial
        lines = trial_metrics(experiment, trial["id"])
        validated = sorted({line["length"] for line in lines if line["kind"] == "validation"})
        assert validated, f"trial {trial['id']} never validated"
        for run in trial["runs"]:
            if run["state"] != "SUCCEEDED":
                continue
            if run["to_length"]:
                assert any(length >= run["to_length"] for length in validated), (trial["id"], run, validated)
            reported = [line["length"] for line in lines if line["run"] == run["run_id"]]
            assert reported, f"run {run['run_id']} reported nothing"
            assert min(reported) > run["from_length"], (run, reported)  # resumed, not retrained
    return summary


def validations(root: Path, summary: Dict[str, Any]) -> Dict[int, List[tuple]]:
    """Trial id -> its distinct validations as (length, validation_loss, accuracy), by length (a run
    stopped between a validation and its checkpoint validates that length again, to the same values)."""
    experiment = root / summary["folder"]
    return {trial["id"]: sorted({(line["length"], line["metrics"]["validation_loss"], line["metrics"]["accuracy"])
                                 for line in trial_metrics(experiment, trial["id"], "validation")})
            for trial in summary["trials"]}
