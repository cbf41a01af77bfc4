"""The pictures (`hpo-slurm plot`) and the HTML report (`hpo-slurm report`) of a real adaptive ASHA
search, checked as a reader would: the right series, labels, units and axis scales."""

from __future__ import annotations

import base64
import dataclasses
import re
import shutil
import sys
from pathlib import Path

import pytest

from hpo_slurm.experiment import folder as experiment
from hpo_slurm.reporting import plots, results
from hpo_slurm.config.schema import load_config
from results_helpers import invoke, launch_example, png_size

pytest.importorskip("matplotlib")


@pytest.fixture(scope="module")
def search(tmp_path_factory):
    """(root, name, Results) of examples/quadratic/adaptive.yaml run to the end: 16 trials, rungs 4, 16, 64."""
    root, name = launch_example(tmp_path_factory.mktemp("adaptive"), "adaptive")
    return root, name, results.load(experiment.find(root, name))


def trial_lines(ax):
    return [line for line in ax.get_lines() if (line.get_gid() or "").startswith("trial-")]


def test_learning_curves_show_every_trial_coloured_by_rung(search):
    _, name, res = search
    figure = plots.learning_curves_figure(res)
    (ax,) = figure.axes
    lines = trial_lines(ax)
    assert len(lines) == 16 == len(results.validation_curves(res))
    assert ax.get_xlabel() == "length (batches)"
    assert ax.get_ylabel() == "validation_loss (lower is better)"
    assert ax.get_xscale() == "log"  # rungs 4, 16, 64 are geometric
    assert name in ax.get_title(loc="left") and "16 trials" in ax.get_title(loc="left")
    legend = [text.get_text() for text in ax.get_legend().get_texts()]
    reached = {t["validated_length"] for t in res.trials}
    assert reached == {4, 16, 64}
    for length in reached:
        assert any(label.startswith(f"reached {length} batches") for label in legend), legend
    assert "rung lengths: 4, 16, 64" in legend
    # one colour per rung reached, the same for every trial that stopped there
    colour_of = {}
    for line in lines:
        trial = res.trial(int(line.get_gid().split("-")[1]))
        colour_of.setdefault(trial["validated_length"], set()).add(line.get_color() if isinstance(line.get_color(), str) else tuple(line.get_color()))
    assert all(len(colours) == 1 for colours in colour_of.values()) and len(colour_of) == 3
    best = results.ranked_trials(res)[0]
    (best_line,) = [line for line in lines if line.get_gid() == f"trial-{best['id']}"]
    assert best_line.get_linewidth() > max(line.get_linewidth() for line in lines if line is not best_line)
    assert any(f"trial {best['id']}" in label for label in legend)
    dashed = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert sorted(line.get_xdata()[0] for line in dashed) == [4, 16, 64]


def test_best_so_far_against_compute_hours(search):
    _, _, res = search
    figure = plots.best_vs_compute_figure(res)
    (ax,) = figure.axes
    # slots_per_trial is 0 in the example: the axis says compute hours, and why
    assert "compute hours" in ax.get_xlabel() and "slots_per_trial is 0" in ax.get_xlabel()
    (step,) = [line for line in ax.get_lines() if line.get_gid() == "best-so-far"]
    ys = list(step.get_ydata())
    assert ys == sorted(ys, reverse=True)  # smaller is better: best so far never rises
    assert ys[-1] == pytest.approx(min(t["best_metric"] for t in res.trials))
    xs = list(step.get_xdata())
    assert xs == sorted(xs) and xs[-1] == pytest.approx(results.total_compute_hours(res))
    assert 0 < xs[-1] < 1  # a few seconds of jobs
    # with GPUs the same picture is in GPU-hours, scaled by the GPUs per trial
    gpu = dataclasses.replace(res, config=dataclasses.replace(res.config, slots_per_trial=2))
    gpu_ax = plots.best_vs_compute_figure(gpu).axes[0]
    assert gpu_ax.get_xlabel().startswith("GPU-hours")
    assert results.total_compute_hours(gpu) == pytest.approx(2 * results.total_compute_hours(res))



def test_best_so_far_says_how_many_jobs_were_preempted_and_how_many_ran_out_of_time(search):
    _, _, res = search
    assert not [line for line in plots.best_vs_compute_figure(res).axes[0].get_lines() if line.get_gid() == "interruptions"]
    interrupted = [dict(t) for t in res.trials]
    interrupted[0].update(preemptions=2, time_limits=1)
    interrupted[1].update(preemptions=1, time_limits=0)
    ax = plots.best_vs_compute_figure(dataclasses.replace(res, trials=interrupted)).axes[0]
    (entry,) = [line for line in ax.get_lines() if line.get_gid() == "interruptions"]
    assert entry.get_label() == "interrupted jobs: 3 preempted, 1 at the time limit"
    assert entry.get_label() in [text.get_text() for text in ax.get_legend().get_texts()]


def test_a_trial_of_four_ranks_counts_four_gpu_hours_in_the_picture_and_the_report(search, tmp_path):
    """The same runs read from a copy whose config asks for 4 GPUs per trial: every compute figure is 4
    times the job hours and says GPU-hours; the CPU-only original says job hours."""
    from hpo_slurm.reporting.report import render
    from hpo_slurm.reporting.status import summarize

    root, name, res = search
    shutil.copytree(root / name, tmp_path / name)
    config = tmp_path / name / "config.yaml"
    config.write_text(re.sub(r"slots_per_trial: 0\b", "slots_per_trial: 4", config.read_text()))
    gpu = results.load(experiment.find(tmp_path, name))
    assert gpu.config.slots_per_trial == 4 and res.config.slots_per_trial == 0
    hours = results.compute_hours_at(res, res.read_at)  # job hours up to the same moment
    assert results.compute_hours_at(gpu, res.read_at) == pytest.approx(4 * hours)
    ax = plots.best_vs_compute_figure(gpu).axes[0]
    assert ax.get_xlabel() == "GPU-hours (4 GPUs per trial × job hours)"
    (step,) = [line for line in ax.get_lines() if line.get_gid() == "best-so-far"]
    cpu_step = [line for line in plots.best_vs_compute_figure(res).axes[0].get_lines()
                if line.get_gid() == "best-so-far"][0]
    assert list(step.get_xdata()) == pytest.approx([4 * x for x in cpu_step.get_xdata()])
    page = render(gpu, summarize(gpu.layout), {})
    assert re.search(r"<tr><th>GPU-hours</th><td>([0-9.e-]+) <span class=\"muted\">GPU-hours \(4 GPUs per trial "
                     r"× job hours\)</span>", page)
    total = float(re.search(r"<th>GPU-hours</th><td>([0-9.e-]+)", page).group(1))
    assert total == pytest.approx(results.total_compute_hours(gpu), rel=1e-3)
    assert total == pytest.approx(4 * results.total_compute_hours(res), rel=1e-3)  # the runs all ended
    cpu_page = render(res, summarize(res.layout), {})
    assert "<th>compute hours</th>" in cpu_page and "job hours; slots_per_trial is 0, no GPUs" in cpu_page
    assert "GPU-hours" not in cpu_page


def test_one_panel_per_hyperparameter_with_its_scale(search):
    _, _, res = search
    figure = plots.hyperparameters_figure(res)
    panels = {ax.get_xlabel(): ax for ax in figure.axes if ax.get_visible()}
    assert set(panels) == {"optimizer.lr", "optimizer.momentum", "layers", "activation"}
    assert panels["optimizer.lr"].get_xscale() == "log"
    assert panels["optimizer.momentum"].get_xscale() == "linear"
    assert [t.get_text() for t in panels["activation"].get_xticklabels()] == ["relu", "tanh", "sigmoid"]
    for ax in panels.values():
        points = [c for c in ax.collections if (c.get_gid() or "").startswith("hp-")]
        assert len(points) == 1 and len(points[0].get_offsets()) == 16
    assert "(log)" in panels["optimizer.lr"].get_title() and "(categorical)" in panels["activation"].get_title()


def test_parallel_coordinates_colour_the_top_trials(search):
    _, _, res = search
    figure = plots.parallel_coordinates_figure(res, top=5)
    ax = figure.axes[0]
    lines = trial_lines(ax)
    assert len(lines) == 16
    grey = [line for line in lines if line.get_color() == "lightgrey"]
    assert len(grey) == 11
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert ticks[0].startswith("optimizer.lr") and "(log)" in ticks[0]
    assert ticks[-1].startswith("validation_loss")
    top = [t["id"] for t in results.ranked_trials(res)[:5]]
    coloured = {int(line.get_gid().split("-")[1]) for line in lines if line not in grey}
    assert coloured == set(top)


def test_plot_command_writes_readable_pngs(search, tmp_path):
    root, name, _ = search
    done = invoke("plot", name, "--root", str(root), "--out", str(tmp_path / "pics"))
    assert done.exit_code == 0, done.output
    paths = [Path(line) for line in done.stdout.split()]
    assert [p.name for p in paths] == [f"{stem}.png" for stem in plots.FIGURES]
    for path in paths:
        width, height = png_size(path)
        assert width >= 800 and height >= 500, (path, width, height)
        assert path.stat().st_size > 20_000  # a real picture, not an empty canvas
    assert png_size(paths[0]) == (1000, 600)


def test_plot_default_folder_is_inside_the_experiment(search):
    root, name, _ = search
    done = invoke("plot", name, "--root", str(root))
    assert done.exit_code == 0, done.output
    assert {Path(p).parent for p in done.stdout.split()} == {root / name / "plots"}


def test_report_is_one_self_contained_page(search, tmp_path):
    root, name, res = search
    out = tmp_path / "report.html"
    done = invoke("report", name, "--root", str(root), "--out", str(out))
    assert done.exit_code == 0, done.output
    page = out.read_text()
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 4
    for data in images:
        png_size(base64.b64decode(data))
    assert not re.search(r'(src|href)="(http|file|/)', page)  # nothing outside the file
    trials_table = page.split('<table class="trials">')[1].split("</table>")[0]
    assert trials_table.count("<tr") == 1 + 16  # a header row, then one row a trial
    best = results.ranked_trials(res)[0]
    assert f"trial {best['id']}" in page and "hyperparameters:" in page and "COMPLETED" in page
    assert "<th>preempted</th><th>time limits</th>" in trials_table


def test_empty_experiment_draws_placeholders(tmp_path):
    config_path = Path(__file__).resolve().parent.parent / "examples" / "quadratic" / "adaptive.yaml"
    layout = experiment.create(load_config(str(config_path)), config_path, tmp_path, "empty", "local")
    res = results.load(layout)
    for stem, figure in plots.figures(res).items():
        texts = [t.get_text() for ax in figure.axes for t in ax.texts]
        assert any("no validation of validation_loss reported yet" in t for t in texts), stem
    assert invoke("report", "empty", "--root", str(tmp_path)).exit_code == 0


def test_missing_matplotlib_is_one_line_and_exit_2(search, monkeypatch):
    root, name, _ = search
    for module in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.setitem(sys.modules, module, None)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    for command in ("plot", "report"):
        done = invoke(command, name, "--root", str(root))
        assert done.exit_code == 2
        assert done.stderr.count("\n") == 1 and "pip install 'hpo-slurm[plots]'" in done.stderr


def test_the_compute_clock_counts_as_compute_hours_at_does_at_any_moment(search):
    """best_so_far's clock (sorted starts and ends, prefix sums) against the plain sum over runs."""
    import random

    _, _, res = search
    clock = results.ComputeClock.of_runs(res.runs, res.read_at)
    starts = [r["started_at"] for r in res.runs if r["started_at"]]
    moments = [min(starts) - 1.0, res.read_at + 5.0] + [random.Random(i).uniform(min(starts), res.read_at) for i in range(50)]
    for moment in moments:
        assert clock.seconds_at(moment) / 3600.0 * (res.config.slots_per_trial or 1) == \
            pytest.approx(results.compute_hours_at(res, moment), rel=1e-9, abs=1e-12)
