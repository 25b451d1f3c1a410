#!/usr/bin/env bash
# README's test command (`npm test`): installs what it needs, builds, lints, runs every jest test in band
# (scenario tests share the kernel, namespaces and ports), and fails on any failed or skipped test.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "npm test: the scenario tests load BPF programs and create network namespaces; run as root (sudo npm test)" >&2
  exit 1
fi
bash scripts/bootstrap.sh
# Scenario tests pin maps.
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
# npm install, not npm ci: npm 11 writes lock files that its own `npm ci` rejects (optional platform packages).
# Also after a pull or merge that changed the dependencies (npm writes node_modules/.package-lock.json).
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm install --no-audit --no-fund
  touch node_modules/.package-lock.json  # an install that changed nothing must not run again on every build
fi
NETTALLY_BUILD_STRICT=1 bash scripts/build.sh
./node_modules/.bin/eslint .

mkdir -p build
rc=0
./node_modules/.bin/jest --runInBand --json --outputFile=build/jest-results.json "$@" || rc=$?
node scripts/test-summary.js build/jest-results.json || rc=1
exit $rc
