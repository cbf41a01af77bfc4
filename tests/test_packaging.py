"""A wheel of hpo-slurm carries what an installed copy needs outside the Python sources: the sbatch
templates of ``templates/sbatch/``, read through ``hpo_slurm.executors.templates``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from hpo_slurm.benchmarks import digits
from hpo_slurm.engine import driver_job
from hpo_slurm.executors.array import render as sweep_render
from hpo_slurm.executors import templates
from hpo_slurm.config.schema import load_config
from hpo_slurm.core.layout import ExperimentLayout

REPO = Path(__file__).resolve().parent.parent
SHIPPED = ("array.sbatch", "driver.sbatch")
DIGITS_CONFIG = {"lr": 1e-3, "width": 64, "depth": 2, "weight_decay": 0.0, "batch_size": 32}


def test_the_templates_read_are_the_repositorys():
    for name in SHIPPED:
        assert templates.sbatch_template(name) == (REPO / "templates" / "sbatch" / name).read_text()
        assert Path(templates.sbatch_template_location(name)).resolve() == REPO / "templates" / "sbatch" / name


def test_the_sweep_and_the_driver_job_render_the_shipped_templates(tmp_path):
    config = load_config(REPO / "examples" / "quadratic" / "random.yaml")
    text, source = sweep_render.load_template(config)
    assert text == templates.sbatch_template("array.sbatch") and source.endswith("templates/sbatch/array.sbatch")
    script = driver_job.render(config, ExperimentLayout(tmp_path / "exp"), "0123456789abcdef")
    assert script.startswith("#!/bin/bash") and "#SBATCH --job-name=hpo-driver.01234567" in script


@pytest.mark.slow
def test_a_wheel_install_finds_the_templates_the_benchmark_table_and_the_dashboards_assets(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    for part in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / part, source / part)
    for folder in ("hpo_slurm", "templates"):
        shutil.copytree(REPO / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(tmp_path / "dist"), str(source)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("hpo_slurm-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {f"hpo_slurm/sbatch_templates/{name}" for name in SHIPPED} <= set(names)
    assert f"hpo_slurm/benchmarks/data/{digits.TABLE}" in names
    dashboard = REPO / "hpo_slurm" / "dashboard"
    assets = {f"hpo_slurm/dashboard/{p.relative_to(dashboard)}" for folder in ("static", "pages")
              for p in (dashboard / folder).rglob("*") if p.is_file()}
    assert "hpo_slurm/dashboard/static/vendor/echarts.min.js" in assets and assets <= set(names)  # no CDN at run time
    compat = REPO / "hpo_slurm" / "compat"
    determined = {f"hpo_slurm/compat/{p.relative_to(compat)}" for folder in ("site", "guard")
                  for p in (compat / folder).rglob("*.py")}
    assert "hpo_slurm/compat/site/determined/core/__init__.py" in determined and determined <= set(names)
    zipfile.ZipFile(wheel).extractall(tmp_path / "site")
    probe = ("import json, hpo_slurm, hpo_slurm.executors.templates as t, hpo_slurm.benchmarks.digits as d; "
             "print(json.dumps([hpo_slurm.__file__, d.objective(%r, 30)] + [t.sbatch_template(n) for n in %r]))"
             % (DIGITS_CONFIG, SHIPPED))
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    where, digits_result, *texts = json.loads(done.stdout)
    assert where.startswith(str(tmp_path / "site"))
    assert digits_result == digits.objective(DIGITS_CONFIG, 30)
    assert texts == [(REPO / "templates" / "sbatch" / name).read_text() for name in SHIPPED]
