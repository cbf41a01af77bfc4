"""The driver: one loop that turns searcher decisions into jobs and job results into searcher events.

One tick (docs/architecture.md walks through it): 1. poll every live job in ONE batched query; 2. ingest
new metric lines (a validation at a trial's target is a searcher event); 3. decide: judge ended jobs,
turn the searcher's actions into trial and run records; 4. persist everything in ONE transaction;
5. act: cancel, submit the runs recorded in 4, record their job ids. Polling comes before ingesting, so
a job seen as ended has all its lines read before its end is judged. Crash safety comes from the order
of 4 and 5: a run is recorded under a unique name before it is submitted and bound to its job id after;
a restarted driver looks unbound runs up by name before submitting anything and re-adopts live jobs
(submitting, binding and re-adopting: ``engine.driver_submit.SubmitsRuns``, part of the driver).
Side effects on files (specs, manifests, stop files) happen in 5, after the decision is durable. A run
without a target (NO_TARGET: no searcher.max_length) is done when its job returns having validated; the
trial's last validation (its row's latest_metric) is then the searcher event (judge.reached_target).
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any, Callable, Dict, Iterable, List, Optional

from hpo_slurm.config.schema import NO_TARGET, ExperimentConfig
from hpo_slurm.core.layout import ExperimentLayout, run_name
from hpo_slurm.core.protocol import RunStatus, StopReason
from hpo_slurm.core.types import (Action, Close, Create, ExitReason, RunState, Shutdown, Train, TrialState,
                                  run_may_be_out)
from hpo_slurm.engine.disk_space import failed_for_room
from hpo_slurm.engine.driver_submit import SubmitsRuns
from hpo_slurm.engine.faults import CrashPoints
from hpo_slurm.engine.ingest import metric_value, reaches_target, validation_fields
from hpo_slurm.engine.judge import judge, open_ended, reached_target, resumes_without_restart
from hpo_slurm.engine.run_spec import RunSpecs
from hpo_slurm.engine.submission import SubmissionPolicy
from hpo_slurm.engine.searcher_log import SearcherLog
from hpo_slurm.engine.tick_changes import TickChanges
from hpo_slurm.engine.workspace import FileWorkspace
from hpo_slurm.executors.base import Executor, JobState, JobStatus, SchedulerError, Workspace
from hpo_slurm.experiment.rows import new_metric_row, new_run_row, new_trial_row
from hpo_slurm.experiment.store import Store
from hpo_slurm.searchers import Searcher
from hpo_slurm.searchers.drain import drain

log = logging.getLogger(__name__)

UNKNOWN_GRACE_S = 30.0  # a job unknown to the scheduler this soon after submission is not yet LOST


class Driver(SubmitsRuns):
    """Owns one experiment while it runs. Build with ``Driver.open``; call ``tick()`` until ``done``."""

    def __init__(
        self,
        layout: ExperimentLayout,
        config: ExperimentConfig,
        store: Store,
        executor: Executor,
        searcher: Searcher,
        clock: Callable[[], float] = time.time,
        poll_interval_s: float = 1.0,
        submit: bool = True,
        workspace: Optional[Workspace] = None,
    ):
        self.layout = layout
        self.workspace = workspace or FileWorkspace(layout)
        self.config = config
        self.store = store
        self.executor = executor
        self.searcher = searcher
        self.clock = clock
        self.poll_interval_s = poll_interval_s
        self.submit_enabled = submit  # False: record runs but leave them unsubmitted (sweep status)
        self.experiment = store.experiment()
        self.job_prefix = f"hpo.{self.experiment['uid'][:8]}."
        self.trials: Dict[int, Dict[str, Any]] = {row["id"]: row for row in store.trials()}
        self.runs: Dict[str, Dict[str, Any]] = {row["id"]: row for row in store.runs()}
        self.runs_by_trial: Dict[int, List[str]] = {}  # every run of a trial, oldest first
        self.active: Dict[int, List[str]] = {}  # trial id -> its unfinished runs, oldest first
        for run in sorted(self.runs.values(), key=lambda r: (r["trial_id"], r["seq"])):
            self.runs_by_trial.setdefault(run["trial_id"], []).append(run["id"])
            if run_may_be_out(run):
                self.active.setdefault(run["trial_id"], []).append(run["id"])
        self._searcher_log = SearcherLog(searcher, store, clock)
        self._changes = TickChanges()
        self._last_poll = -math.inf
        self._submission = SubmissionPolicy()
        self._stopping = False
        self._crash = CrashPoints.from_environment()
        self._children = {t for t, row in self.trials.items() if row["parent_checkpoint"]}  # PBT children
        self._specs = RunSpecs(config, layout)

    # ---- life cycle -----------------------------------------------------------------------------
    def start(self, fresh: bool) -> None:
        """Begin a new search (``fresh``) or reconcile with the jobs an earlier driver left."""
        if fresh and self.workspace.stop_requested():
            self._set_experiment(state="STOPPED", ended_at=self.clock())
            self._persist()
            return
        if fresh:
            self._apply(self._feed("initial"))
            self._event("experiment_started", None, {"executor": self.executor.name})
            log.info("started: %s search on the %s executor", self.config.searcher.name, self.executor.name)
            self._persist()
        else:
            self._reconcile()
        self._act()

    @property
    def done(self) -> bool:
        state = self.experiment["state"]
        return state != "RUNNING" and not any(self._live_runs())

    def tick(self) -> None:
        now = self.clock()
        polled = now - self._last_poll >= self.poll_interval_s
        if polled:
            self._last_poll = now
            statuses = self._poll()
        else:
            statuses = {}
        for trial_id in list(self.active):
            # between polls only trials seen running can have new lines: queued ones cost no file access
            if polled or self._running(trial_id):
                self._ingest(trial_id)
        for run_id, status in statuses.items():
            self._on_job_status(run_id, status)
        if not self._stopping and self.workspace.stop_requested():
            self._stop_all()
        self._persist()
        self._act()

    # ---- 1. poll --------------------------------------------------------------------------------
    def _live_runs(self) -> Iterable[Dict[str, Any]]:
        for run_ids in self.active.values():
            for run_id in run_ids:
                run = self.runs[run_id]
                if run["job_id"]:
                    yield run

    def _poll(self) -> Dict[str, JobStatus]:
        by_job = {run["job_id"]: run["id"] for run in self._live_runs()}
        if not by_job:
            return {}
        states = self.executor.poll(list(by_job))
        return {by_job[job_id]: status for job_id, status in states.items() if job_id in by_job}

    # ---- 2. ingest ------------------------------------------------------------------------------
    def _running(self, trial_id: int) -> bool:
        return any(self.runs[run_id]["state"] == RunState.RUNNING.value for run_id in self.active.get(trial_id, ()))

    def _ingest(self, trial_id: int) -> None:
        trial = self.trials[trial_id]
        lines, offset, warnings = self.workspace.read_metrics(trial_id, trial["metrics_offset"] or 0)
        for warning in warnings:
            log.warning(warning)
        if offset != trial["metrics_offset"]:
            self._set_trial(trial_id, metrics_offset=offset)
        searcher = self.config.searcher
        reached = max((line.length for line in lines), default=0)
        if reached > (trial["trained_length"] or 0):
            self._set_trial(trial_id, trained_length=reached)
        for line in lines:
            self._changes.metrics.append(
                new_metric_row(trial_id, line.run, line.kind, line.length, line.metrics, line.time))
            if line.kind != "validation":
                continue
            value = metric_value(line.metrics, searcher.metric)
            if math.isnan(value):
                log.warning("trial %s: validation at %s has no numeric %r: counted as the worst",
                            trial_id, line.length, searcher.metric)
            self._set_trial(trial_id, **validation_fields(trial, line.length, value, searcher.smaller_is_better))
            if reaches_target(trial, line.length):
                target = trial["target_length"]
                self._set_trial(trial_id, validated_length=target)
                self._reached(trial_id, target, value)

    def _reached(self, trial_id: int, target: int, value: float) -> None:
        """The trial did its Train to ``target``: it validated there, or, for NO_TARGET, its job returned
        and ``value`` is its last validation's metric (at ``validated_length``, the longest it reached)."""
        self._set_trial(trial_id, target_length=None, state=TrialState.PAUSED.value)
        self._event("validation", trial_id, {"length": self.trials[trial_id]["validated_length"], "metric": value})
        self._apply(self._feed("validation", trial_id, target, value))

    # ---- 3. decide ------------------------------------------------------------------------------
    def _on_job_status(self, run_id: str, status: JobStatus) -> None:
        run = self.runs[run_id]
        trial_id = run["trial_id"]
        if status.state == JobState.PENDING:
            if status.confirmed and run["state"] == RunState.RUNNING.value:
                # the scheduler requeued it (a preemption): queued again until it restarts
                self._set_run(run_id, state=RunState.SUBMITTED.value)
                self._show_trial_as(trial_id, TrialState.QUEUED)
            return
        if status.state == JobState.RUNNING:
            if run["state"] == RunState.SUBMITTED.value:
                self._set_run(run_id, state=RunState.RUNNING.value, started_at=self.clock())
                self._show_trial_as(trial_id, TrialState.RUNNING)
            return
        if (status.state == JobState.UNKNOWN and (self._recently_submitted(run) or not status.confirmed)
                and self.workspace.read_result(run_id) is None):
            return  # not yet visible to the scheduler's queries, or its accounting could not say how it ended
        self._on_job_ended(run_id, status)

    def _show_trial_as(self, trial_id: int, state: TrialState) -> None:
        """The state its current run gives an open trial (queued, running) while it trains toward a target."""
        trial = self.trials[trial_id]
        if not trial["closed"] and trial["target_length"] is not None:
            self._set_trial(trial_id, state=state.value)

    def _recently_submitted(self, run: Dict[str, Any]) -> bool:
        return self.clock() - (run["submitted_at"] or 0.0) < UNKNOWN_GRACE_S

    def _on_job_ended(self, run_id: str, status: JobStatus) -> None:
        run = self.runs[run_id]
        trial_id = run["trial_id"]
        trial = self.trials[trial_id]
        result = self.workspace.read_result(run_id)
        outcome, reason = judge(run, trial, status, result)
        reason = failed_for_room(outcome, reason, result, self.workspace.run_dir(run_id))
        self._finish_run(run_id, outcome, reason, status.exit_code)
        for interrupted in self.workspace.earlier_interruptions(run_id):  # requeued under the same job id
            self._count_interruption(trial_id, interrupted)
        if outcome is RunState.SUCCEEDED and open_ended(run) and trial["target_length"] == NO_TARGET:
            latest = trial["latest_metric"]  # None: not finite, the worst
            self._reached(trial_id, NO_TARGET, math.nan if latest is None else latest)
        if result is not None and result.status is RunStatus.ENDED_EARLY and not self.trials[trial_id]["closed"]:
            self._early_exit(trial_id, ExitReason.USER_REQUESTED_STOP, f"ended by its code {result.message or ''}"
                             .strip(), TrialState.STOPPED_EARLY)
        if trial["closed"] or outcome in (RunState.SUCCEEDED, RunState.CANCELLED):
            return
        if result is not None and result.status is RunStatus.INVALID_HP:
            self._early_exit(trial_id, ExitReason.INVALID_HP, f"invalid hyperparameters: {result.message or ''}")
        elif outcome == RunState.PREEMPTED:
            self._count_interruption(trial_id, StopReason.PREEMPTED)
            self._record_run(trial_id)
        elif resumes_without_restart(outcome, reason):
            if outcome is RunState.TIMEOUT:
                self._count_interruption(trial_id, StopReason.TIME_LIMIT)
            self._record_run(trial_id)
        else:
            restarts = (trial["restarts"] or 0) + 1
            self._set_trial(trial_id, restarts=restarts, message=reason)
            if restarts > self.config.max_restarts:
                self._early_exit(trial_id, ExitReason.ERRORED,
                                 f"failed {restarts} times (max_restarts {self.config.max_restarts}); last: {reason}")
            else:
                self._record_run(trial_id)

    def _count_interruption(self, trial_id: int, reason: StopReason) -> None:
        """One more preemption, or one more stop at the time limit, for the trial's counts."""
        column = "preemptions" if reason is StopReason.PREEMPTED else "time_limits"
        self._set_trial(trial_id, **{column: (self.trials[trial_id][column] or 0) + 1})

    def _finish_run(self, run_id: str, outcome: RunState, reason: str, exit_code: Optional[int]) -> None:
        run = self.runs[run_id]
        started, ended = self.workspace.run_times(run_id) if run["job_id"] else (None, None)
        # the job's own times are exact; the driver only sees states as often as it polls
        self._set_run(run_id, state=outcome.value, reason=reason, exit_code=exit_code,
                      started_at=started or run["started_at"], ended_at=ended or self.clock())
        self.active[run["trial_id"]].remove(run_id)
        if not self.active[run["trial_id"]]:
            del self.active[run["trial_id"]]
        self._event("run_ended", run["trial_id"], {"run": run_id, "state": outcome.value, "reason": reason})
        self._changes.touched_trials.add(run["trial_id"])

    def _early_exit(self, trial_id: int, reason: ExitReason, message: str,
                    state: TrialState = TrialState.ERRORED) -> None:
        log.warning("trial %s: %s", trial_id, message)
        self._set_trial(trial_id, state=state.value, exit_reason=reason.value, message=message,
                        target_length=None, ended_at=self.clock())
        self._event("early_exit", trial_id, {"reason": reason.value, "message": message})
        self._apply(self._feed("early_exit", trial_id, reason.value))
        if not self.trials[trial_id]["closed"]:
            self._mark_closed(trial_id)
            self._apply(self._feed("closed", trial_id))

    def _feed(self, kind: str, *args: Any) -> List[Action]:
        """Give the searcher one event, logging it so a restart can replay it after the last snapshot."""
        return self._searcher_log.feed(kind, args, self._changes.searcher_events)

    def _apply(self, actions: Iterable[Action]) -> None:
        drain(actions, self._apply_one)

    def _apply_one(self, action: Action) -> Optional[List[Action]]:
        """Turn one searcher action into trial, run and experiment changes; the searcher's answer to
        being told about it (created, closed), if any."""
        if isinstance(action, Create):
            self._create_trial(action)
            self._event("created", action.trial_id, {"hparams": action.hparams, "parent": action.parent})
            return self._feed("created", action.trial_id)
        if isinstance(action, Train):
            self._set_trial(action.trial_id, target_length=action.length)
            self._record_run(action.trial_id)
        elif isinstance(action, Close):
            if not self.trials[action.trial_id]["closed"]:
                self._close_trial(action.trial_id)
                return self._feed("closed", action.trial_id)
        elif isinstance(action, Shutdown):
            state = "ERRORED" if action.failure else "COMPLETED"
            self._set_experiment(state=state, ended_at=self.clock())
            self._event("shutdown", None, {"failure": action.failure})
        return None

    def _create_trial(self, action: Create) -> None:
        parent_checkpoint = None
        if action.parent is not None:
            parent_checkpoint = self.workspace.latest_checkpoint(action.parent)
        self.trials[action.trial_id] = new_trial_row(action.trial_id, action.hparams, action.parent,
                                                     parent_checkpoint, self.clock())
        self._changes.new_trials.append(action.trial_id)
        if parent_checkpoint:
            self._children.add(action.trial_id)

    def _record_run(self, trial_id: int) -> None:
        """Record the run that trains ``trial_id`` to its target; it is submitted in the act phase."""
        trial = self.trials[trial_id]
        seq = 1 + max((r["seq"] for r in self._runs_of(trial_id)), default=0)
        run_id = run_name(trial_id, seq)
        # its time limit is fitted when it is submitted, once the trial's earlier runs have ended
        self.runs[run_id] = new_run_row(run_id, trial_id, seq, trial["validated_length"] or 0, trial["target_length"],
                                        self.clock())
        self._changes.new_runs.append(run_id)
        self.runs_by_trial.setdefault(trial_id, []).append(run_id)
        self.active.setdefault(trial_id, []).append(run_id)
        if not any(self.runs[r]["job_id"] for r in self.active[trial_id]):
            self._set_trial(trial_id, state=TrialState.PENDING.value)

    def _runs_of(self, trial_id: int) -> List[Dict[str, Any]]:
        return [self.runs[run_id] for run_id in self.runs_by_trial.get(trial_id, [])]

    def _close_trial(self, trial_id: int) -> None:
        trial = self.trials[trial_id]
        if trial["state"] != TrialState.ERRORED.value:
            searcher = self.config.searcher  # a search without max_length closes trials once they are done
            finished = searcher.open_ended or (trial["validated_length"] or 0) >= searcher.max_length
            state = TrialState.COMPLETED if finished else TrialState.STOPPED_EARLY
            self._set_trial(trial_id, state=state.value, target_length=None, ended_at=self.clock())
        self._mark_closed(trial_id)
        self._event("closed", trial_id, {})

    def _mark_closed(self, trial_id: int) -> None:
        """The trial gets no more work: its unsubmitted runs are dropped, its unfinished work cancelled."""
        self._set_trial(trial_id, closed=1)
        for run_id in list(self.active.get(trial_id, [])):
            run = self.runs[run_id]
            if not run["job_id"]:
                if run_id in self._submission.uncertain:  # its job may exist: if it ever starts, it stops at once
                    self.workspace.request_stop(run_id)
                    self._submission.uncertain.discard(run_id)
                self._finish_run(run_id, RunState.CANCELLED, "not needed any more", None)
            elif not reached_target(run, self.trials[trial_id], None):
                self._set_run(run_id, state=RunState.CANCELLED.value, reason="stopped by the search")
                self._changes.cancel.append(run_id)

    def _stop_all(self) -> None:
        """The user asked to stop: close every open trial and cancel all work."""
        self._stopping = True
        for trial_id, trial in self.trials.items():
            if not trial["closed"]:
                self._set_trial(trial_id, state=TrialState.STOPPED_EARLY.value, exit_reason=ExitReason.USER_CANCELED.value,
                                target_length=None, ended_at=self.clock())
                self._mark_closed(trial_id)
        for run in self._live_runs():
            if run["id"] not in self._changes.cancel:
                self._changes.cancel.append(run["id"])
        if self.experiment["state"] == "RUNNING":
            self._set_experiment(state="STOPPED", ended_at=self.clock())
        self._event("stopped", None, {})

    # ---- bookkeeping ----------------------------------------------------------------------------
    def _set_trial(self, trial_id: int, **fields: Any) -> None:
        self.trials[trial_id].update(fields)
        if trial_id not in self._changes.new_trials:
            self._changes.trials.setdefault(trial_id, {}).update(fields)

    def _set_run(self, run_id: str, **fields: Any) -> None:
        self.runs[run_id].update(fields)
        if run_id not in self._changes.new_runs:
            self._changes.runs.setdefault(run_id, {}).update(fields)

    def _set_experiment(self, **fields: Any) -> None:
        self.experiment.update(fields)
        self._changes.experiment.update(fields)

    def _event(self, kind: str, trial_id: Optional[int], data: Dict[str, Any]) -> None:
        self._changes.events.append({"time": self.clock(), "kind": kind, "trial_id": trial_id, "data": data})

    # ---- 4. persist -----------------------------------------------------------------------------
    def _persist(self) -> None:
        changes = self._changes
        if changes.empty():
            return
        with self.store.transaction():
            changes.write(self.store, self.trials, self.runs, self.searcher.progress)
            self._searcher_log.save_if_due(self.store, len(self.trials), self.experiment["state"] == "RUNNING")
        self._searcher_log.committed()
        self._changes = TickChanges(cancel=changes.cancel, touched_trials=changes.touched_trials)

    def checkpoint_searcher(self) -> None:
        """Snapshot the searcher now, if every event it saw is durable (``SearcherLog.save_now``)."""
        self._searcher_log.save_now(self.store)

    # ---- 5. act ---------------------------------------------------------------------------------
    def _act(self) -> None:
        changes = self._changes
        if changes.cancel:
            pending, changes.cancel = changes.cancel, []
            self._cancel(pending)
        if self.submit_enabled and self._submission.may_submit(self.clock()):
            self._submit_ready()
        if changes.touched_trials:
            referenced = {self.trials[t]["parent_checkpoint"] for t in self._children
                          if not TrialState(self.trials[t]["state"]).terminal}
            for trial_id in changes.touched_trials:
                used = self.workspace.collect_garbage(self.config, self.trials, trial_id,
                                                      lambda t=trial_id: self._validations(t), referenced)
                self._set_trial(trial_id, checkpoint_bytes=used)
        changes.touched_trials = set()
        self._persist()

    def _validations(self, trial_id: int) -> Dict[int, float]:
        """The trial's validation metric by length (read from the store only when a GC needs it)."""
        return {row["length"]: metric_value(row["metrics"], self.config.searcher.metric)
                for row in self.store.metrics(trial_id, kind="validation")}

    def _cancel(self, run_ids: List[str]) -> None:
        """Ask the runs' trials to stop and cancel their jobs; a cancel that could not be delivered is
        tried again next tick (the runs stay watched until their jobs end)."""
        job_ids = []
        for run_id in run_ids:
            self.workspace.request_stop(run_id)
            if self.runs[run_id]["job_id"]:
                job_ids.append(self.runs[run_id]["job_id"])
        if not job_ids:
            return
        try:
            self.executor.cancel(job_ids)
        except SchedulerError as exc:
            log.warning("%s; trying again", exc)
            self._changes.cancel.extend(run_ids)
