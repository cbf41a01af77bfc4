#!/usr/bin/env bash
# Install hpo-slurm with everything its tests need (as root: Debian's chromium for the dashboard's
# browser tests too), check the import contracts (`lint-imports`, see
# pyproject.toml), start the local Slurm cluster when running as root (scripts/local-slurm.sh), and run
# the whole test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

# torch first and pinned: its CPU wheel; an open requirement would pull several GB of CUDA packages.
python3 -m pip install --quiet --disable-pip-version-check torch==2.13.0
python3 -m pip install --quiet --disable-pip-version-check -e '.[torch,examples,dev]'

# the dashboard's tests drive Debian's headless Chromium through its chromedriver
if [ "$(id -u)" = 0 ] && ! { command -v chromium >/dev/null && command -v chromedriver >/dev/null; }; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
fi
if [ "$(id -u)" = 0 ]; then
  export HPO_SLURM_REQUIRE_BROWSER=1   # browser tests must run, not skip
fi

# layers point down and the job side imports nothing heavy; a broken contract stops the script here
lint-imports

if [ "$(id -u)" = 0 ] && [ "${HPO_SLURM_SKIP_CLUSTER:-0}" != 1 ]; then
  bash scripts/local-slurm.sh up
  export HPO_SLURM_REQUIRE_CLUSTER=1   # Slurm tests must run, not skip
  if [ "${CI:-}" = true ]; then
    # CI owns this cluster: jobs an earlier session left queued would only slow the tests down
    scancel --user "$(id -un)" 2>/dev/null || true
  fi
fi

python3 -m pytest "$@"
