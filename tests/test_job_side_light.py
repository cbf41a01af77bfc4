"""The job side stays light and the layers point down.

What every job imports (``hpo_slurm.trial`` in the user's script, ``hpo_slurm.tasks`` around it, the
driver-to-job protocol) must load none of the driver's libraries: a job starts on a compute node,
often from a shared filesystem, and pays for every import; a trial must not need the CLI's or the
store's packages installed. Each module is imported in a fresh interpreter and ``sys.modules`` is
checked. ``lint-imports`` (pyproject.toml ``[tool.importlinter]``) checks the layers and the same
rule statically; running it here makes pytest alone catch an import that points the wrong way.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

JOB_SIDE_MODULES = [
    "hpo_slurm.trial",
    "hpo_slurm.tasks.job",
    "hpo_slurm.tasks.slurm_task",
    "hpo_slurm.tasks.sweep_task",
    "hpo_slurm.core.protocol",
    "hpo_slurm.compat.core",  # Determined's Core API, as a trial's `import determined` loads it
    "hpo_slurm.compat.launch",
]

# The driver's store (sqlite3, sqlite_utils), the CLI's (rich, click), the config's (yaml), the
# trainer's (torch: only hpo_slurm.torch may load it) and submitit's Slurm executor (the driver's side).
HEAVY_MODULES = ["sqlite3", "sqlite_utils", "rich", "click", "yaml", "torch", "submitit.slurm"]

# Prints, as JSON, which of the given modules the import of argv[1] loaded.
PROBE = """
import importlib, json, sys
importlib.import_module(sys.argv[1])
print(json.dumps(sorted(name for name in sys.argv[2:] if name in sys.modules)))
"""


def _repo_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def modules_loaded_by(module: str, candidates: list) -> list:
    """Which of ``candidates`` are in ``sys.modules`` after importing ``module`` in a fresh interpreter."""
    done = subprocess.run([sys.executable, "-c", PROBE, module, *candidates], capture_output=True, text=True,
                          env=_repo_env(), cwd=REPO, timeout=120)
    assert done.returncode == 0, f"importing {module} failed:\n{done.stderr}"
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("module", JOB_SIDE_MODULES)
def test_job_side_module_loads_nothing_heavy(module):
    loaded = modules_loaded_by(module, HEAVY_MODULES)
    assert loaded == [], f"`import {module}` loads {', '.join(loaded)}: the job side must stay light"


def test_probe_sees_heavy_imports():
    """The check above can fail: it sees a heavy module that is loaded, directly or by another one (any
    submitit import loads its Slurm executor, which is why the job side imports submitit lazily)."""
    assert modules_loaded_by("sqlite3", HEAVY_MODULES) == ["sqlite3"]
    assert modules_loaded_by("submitit", HEAVY_MODULES) == ["submitit.slurm"]
    assert modules_loaded_by("hpo_slurm.executors.slurm.executor", ["submitit.slurm"]) == ["submitit.slurm"]


def test_import_contracts_are_kept():
    """``lint-imports`` passes on this tree: layers point down, the job side imports nothing heavy."""
    command = shutil.which("lint-imports")
    if command is None:
        pytest.skip("lint-imports is not installed (it comes with the dev extra: pip install -e '.[dev]')")
    done = subprocess.run([command, "--no-cache"], capture_output=True, text=True, env=_repo_env(), cwd=REPO,
                          timeout=300)
    assert done.returncode == 0, f"lint-imports found a broken import contract:\n{done.stdout[-5000:]}{done.stderr[-2000:]}"
    assert "0 broken" in done.stdout
