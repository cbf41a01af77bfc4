"""The driver's submissions: ready runs become jobs, jobs are bound to the runs recorded for them, and a
resumed driver looks up and re-adopts the jobs an earlier one left.

Crash safety lives in the order: a run is recorded (persisted) under a unique job name before it is
submitted, its job id is bound to it after; a run whose submission may have created a job, or that a
crash left unbound, is looked up by name before anything is submitted again. ``SubmitsRuns`` is a part
of ``engine.driver.Driver`` (its state: ``runs``, ``trials``, ``active``, ``executor``, ``workspace``,
``config``, the submission policy and the tick's changes), kept apart so each module has one job.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, Optional

from hpo_slurm.core.placement import Placement
from hpo_slurm.core.protocol import RunSpec
from hpo_slurm.core.types import TrialState, awaits_submission, cancel_unconfirmed
from hpo_slurm.engine.checkpoints import missing_start
from hpo_slurm.engine.judge import SUBMISSION_REFUSED
from hpo_slurm.engine.submission import ready_runs
from hpo_slurm.engine.timefit import fitted_time_minutes
from hpo_slurm.executors.base import JobRequest, JobState, JobStatus, SchedulerError, SubmitError

log = logging.getLogger("hpo_slurm.engine.driver")  # its lines are the driver's, in driver.log


class SubmitsRuns:
    """Submitting, binding and re-adopting the jobs of a ``Driver``'s runs (mixed into ``Driver``)."""

    def _request(self, run: Dict[str, Any], spec: Optional[RunSpec] = None,
                 placement: Placement = Placement()) -> JobRequest:
        """The job of ``run``: to submit (with its ``spec`` and ``placement``), or to look up by name."""
        return JobRequest(
            run_id=run["id"], job_name=self.job_prefix + run["id"], run_dir=self.workspace.run_dir(run["id"]),
            spec_path=self.workspace.spec_path(run["id"]), gpus=self.config.slots_per_trial,
            time_minutes=run["time_minutes"], spec=spec, placement=placement,
        )

    def _submit_ready(self) -> None:
        ready = self._submission.take(ready_runs(self.active, self.runs))
        if not ready:
            return
        try:
            placement = self.executor.placement(self.config)  # before anything changes: it may be refused
        except SchedulerError as exc:  # the scheduler could not say how a trial's ranks fit its nodes
            self._submission.wait_for_lookup(self.clock())
            log.warning("cannot place runs yet (%s); submitting once Slurm answers", exc)
            return
        delivered = self.executor.delivers_specs  # else each run's spec file is written here, first
        specs: Dict[str, RunSpec] = {}
        for run in ready:
            gone = run["from_length"] and missing_start(self.trials[run["trial_id"]], run,
                                                        self.workspace.latest_checkpoint(run["trial_id"]))
            if gone:  # a user deleted the checkpoint it was to start from
                log.warning(gone)
                self._set_trial(run["trial_id"], message=gone)
            earlier = [r for r in self._runs_of(run["trial_id"]) if r["id"] != run["id"]]
            self._set_run(run["id"], time_minutes=fitted_time_minutes(
                earlier, run["from_length"], run["to_length"],
                self.config.slurm.time_minutes, self.config.slurm.signal_delay_s,
            ))
            spec = self._specs.build(self.trials[run["trial_id"]], run, placement)
            if delivered:
                specs[run["id"]] = spec
            else:
                self.workspace.prepare_run(run["id"], run["trial_id"], spec)
        self._crash.reached("before_submit")
        uncertain = [run for run in ready if run["id"] in self._submission.uncertain]
        if uncertain:
            # an earlier attempt failed in a way that may have created jobs: look before resubmitting
            try:
                found = self.executor.find([self._request(run) for run in uncertain])
            except SchedulerError as exc:
                self._submission.wait_for_lookup(self.clock())
                log.warning("cannot look up %d runs that may have been submitted (%s); nothing is submitted "
                            "until they are found or known to be missing", len(uncertain), exc)
                return
            self._bind(found)
            ready = [run for run in ready if run["id"] not in found]
            if not ready:
                return
        try:
            submitted = self.executor.submit([self._request(run, specs.get(run["id"]), placement) for run in ready])
        except SubmitError as exc:
            self._bind(exc.submitted)
            failed = [run for run in ready if run["id"] not in exc.submitted]
            delay = self._submission.refused(self.clock(), (run["id"] for run in failed), exc.retry, exc.limit)
            if exc.limit:
                log.warning("the cluster refused %d runs for its cap on queued jobs (%s); submitting at most %d "
                            "at a time from now on, next try in %.0fs", len(failed), exc, self._submission.batch_cap, delay)
            else:
                log.warning("submission failed (%s); %s", exc, f"retrying in {delay:.0f}s" if exc.retry else "not retrying")
            if not exc.retry:
                for run in failed:
                    self._on_job_ended(run["id"], JobStatus(JobState.FAILED, reason=f"{SUBMISSION_REFUSED}: {exc}"))
            return
        self._crash.reached("after_submit")
        self._submission.succeeded()
        self._bind({run["id"]: job for run, job in zip(ready, submitted)})

    def _bind(self, jobs: Dict[str, Any]) -> None:
        """Record the job of each run (a Submitted, or a job id found by name)."""
        now = self.clock()
        for run_id, job in jobs.items():
            job_id, gpus = (job, "") if isinstance(job, str) else (job.job_id, job.gpus)
            self._set_run(run_id, job_id=job_id, gpus=gpus, submitted_at=now)
            self._submission.uncertain.discard(run_id)
            trial_id = self.runs[run_id]["trial_id"]
            if not self.trials[trial_id]["closed"]:
                self._set_trial(trial_id, state=TrialState.QUEUED.value)

    # ---- restart --------------------------------------------------------------------------------
    def _reconcile(self) -> None:
        """Bind runs recorded but never bound to a job (a crash between submit and record), and adopt
        the live jobs of the previous driver."""
        unbound = [self.runs[ids[0]] for ids in self.active.values() if awaits_submission(self.runs[ids[0]])]
        if unbound:
            try:
                found = self.executor.find([self._request(run) for run in unbound])
            except SchedulerError as exc:  # look again before submitting any of them
                log.warning("cannot look up the jobs of %d unbound runs yet (%s)", len(unbound), exc)
                self._submission.uncertain.update(run["id"] for run in unbound)
                found = {}
            for run_id, job_id in found.items():
                log.info("run %s: re-adopted job %s submitted before the driver stopped", run_id, job_id)
            self._bind(found)
        adopted = 0
        for run in self._live_runs():
            adopted += 1
            self.executor.adopt(run["job_id"], run["gpus"] or "")
            if cancel_unconfirmed(run):  # the previous driver may have died before cancelling it
                self._changes.cancel.append(run["id"])
        log.info("resumed: %d live jobs re-adopted (%d cancels sent again), %d runs to submit",
                 adopted, len(self._changes.cancel), len(ready_runs(self.active, self.runs)))
        self._event("resumed", None, {"adopted": adopted})
        self._persist()

