"""Time limits fitted to each run's work."""

import math

from hpo_slurm.engine.timefit import OVERHEAD_S, fitted_time_minutes


def run(state, started, ended, start, end):
    return {"state": state, "started_at": started, "ended_at": ended, "from_length": start, "to_length": end}


def test_first_run_asks_for_the_configured_limit():
    assert fitted_time_minutes([], 0, 100, limit_minutes=240, signal_delay_s=120) == 240


def test_continuations_ask_for_measured_speed_with_margin_and_overhead():
    earlier = [run("SUCCEEDED", 0.0, 600.0, 0, 100)]  # 6 s per unit
    minutes = fitted_time_minutes(earlier, 100, 400, limit_minutes=240, signal_delay_s=120)
    assert minutes == math.ceil((6.0 * 300 * 1.5 + OVERHEAD_S + 120) / 60)  # 50 minutes
    assert minutes < 240


def test_never_more_than_the_limit_and_failed_runs_do_not_count():
    earlier = [run("SUCCEEDED", 0.0, 6000.0, 0, 10), run("FAILED", 0.0, 1.0, 10, 20)]
    assert fitted_time_minutes(earlier, 10, 1000, limit_minutes=60, signal_delay_s=120) == 60
    assert fitted_time_minutes([run("FAILED", 0.0, 5.0, 0, 10)], 10, 20, limit_minutes=60, signal_delay_s=120) == 60


def test_no_limit_stays_no_limit():
    assert fitted_time_minutes([run("SUCCEEDED", 0.0, 1.0, 0, 10)], 10, 20, limit_minutes=None, signal_delay_s=120) is None
