"""Trials, runs and metrics as CSV, JSON or JSON Lines, for pandas and friends.

Row shapes (``rows(results, what)``):
  trials   id, state, parent, length_reached, target_length, best_metric, best_length, latest_metric,
           restarts, preemptions, time_limits, checkpoint_bytes, created_at, ended_at, exit_reason, message,
           hparams (preemptions: times a job of the trial was preempted; time_limits: times one stopped at
           its time limit; neither counts among the restarts)
  runs     every column of the runs table (times are Unix seconds), then job_hours (the run's wall hours,
           null until it has started and ended) and gpu_hours (job_hours times resources.slots_per_trial:
           a trial of N ranks holds N GPUs; 0 when trials use no GPU)
  metrics  trial_id, run_id, kind (training|validation), length, time, metrics
A ``target_length`` (trials) or ``to_length`` (runs) of 0 is no target: in a search without
``searcher.max_length`` a trial trains until its code stops.

``hparams`` and ``metrics`` stay nested in JSON and JSON Lines; CSV flattens them to dotted columns
(``hparams.optimizer.lr``, ``metrics.validation_loss``), the names ``pandas.json_normalize`` gives the
JSON, so both read into the same frame:

    pd.read_csv("trials.csv")  ~  pd.json_normalize(json.load(open("trials.json")))
"""

from __future__ import annotations

import csv
import json
import math
from typing import IO, Any, Dict, List

from hpo_slurm.core.errors import UserError
from hpo_slurm.reporting.results import Results, flatten

FORMATS = ("csv", "json", "jsonl")
WHAT = ("trials", "runs", "metrics")
TRIAL_FIELDS = ("id", "state", "parent", "length_reached", "target_length", "best_metric", "best_length",
                "latest_metric", "restarts", "preemptions", "time_limits", "checkpoint_bytes", "created_at", "ended_at",
                "exit_reason", "message")


def rows(results: Results, what: str) -> List[Dict[str, Any]]:
    """The rows of one table, nested fields as dicts."""
    if what == "trials":
        # t.get: a database of an older schema has no time_limits
        return [{**{f: (t["validated_length"] or 0) if f == "length_reached" else t.get(f) for f in TRIAL_FIELDS},
                 "hparams": t["hparams"]} for t in results.trials]
    if what == "runs":
        slots = results.config.slots_per_trial
        return [{**r, **_hours(r, slots)} for r in results.runs]
    if what == "metrics":
        return [{"trial_id": m["trial_id"], "run_id": m["run_id"], "kind": m["kind"], "length": m["length"],
                 "time": m["time"], "metrics": m["metrics"]} for m in results.metrics]
    raise UserError(f"--what {what!r}: expected one of {', '.join(WHAT)}")


def _hours(run: Dict[str, Any], slots: int) -> Dict[str, Any]:
    if not (run["started_at"] and run["ended_at"]):
        return {"job_hours": None, "gpu_hours": None}
    job_hours = max(0.0, run["ended_at"] - run["started_at"]) / 3600.0
    return {"job_hours": job_hours, "gpu_hours": job_hours * slots}


def write(table: List[Dict[str, Any]], fmt: str, out: IO[str]) -> None:
    """Write ``table`` to the text stream ``out`` as ``fmt`` (csv, json or jsonl).
    NaN and infinities become null in JSON (strict JSON has no such numbers) and empty cells in CSV."""
    if fmt == "json":
        json.dump([_strict(row) for row in table], out, indent=1)
        out.write("\n")
    elif fmt == "jsonl":
        for row in table:
            out.write(json.dumps(_strict(row)) + "\n")
    elif fmt == "csv":
        flat = [dict(flatten(row)) for row in table]
        columns: Dict[str, None] = {}
        for row in flat:
            columns.update(dict.fromkeys(row))
        writer = csv.DictWriter(out, fieldnames=list(columns), lineterminator="\n")
        writer.writeheader()
        for row in flat:
            writer.writerow({key: _cell(value) for key, value in row.items()})
    else:
        raise UserError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")


def _strict(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _strict(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_strict(item) for item in value]
    return value


def _cell(value: Any) -> Any:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return value
