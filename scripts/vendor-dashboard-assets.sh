#!/usr/bin/env bash
# Refresh the chart library the dashboard ships (hpo_slurm/dashboard/static/vendor/): Apache ECharts
# from the npm registry, at the pinned version, with its licence and notice. The dashboard loads
# nothing from the network at run time; this script is only for moving the pin.
#   bash scripts/vendor-dashboard-assets.sh [VERSION]
set -euo pipefail
cd "$(dirname "$0")/.."
version="${1:-6.1.0}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "echarts@${version}" >/dev/null && tar xzf "echarts-${version}.tgz")
vendor=hpo_slurm/dashboard/static/vendor
cp "$work/package/dist/echarts.min.js" "$vendor/echarts.min.js"
cp "$work/package/LICENSE" "$vendor/ECHARTS-LICENSE"
cp "$work/package/NOTICE" "$vendor/ECHARTS-NOTICE"
echo "echarts ${version}: $(sha256sum "$vendor/echarts.min.js" | cut -d' ' -f1)"
