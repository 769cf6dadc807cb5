#!/usr/bin/env bash
# Bursar's one test command: installs what the tests need, builds, runs every test, stops what it started.
# .ci/run calls exactly this. Tests read public data from ../shared/data (never copied into the project).
set -euo pipefail
cd "$(dirname "$0")"

started=()
cleanup() { for pid in "${started[@]:-}"; do [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT

# --- what the tests need -------------------------------------------------------------------------
# The .NET SDK comes with the machine; NuGet packages restore from the registry.
# (PostgreSQL, Redis and Chromium join this list with the issues whose tests need them.)
command -v dotnet >/dev/null || { echo "The .NET 10 SDK is required (dotnet not on PATH)." >&2; exit 1; }
[ -f ../shared/data/litellm_model_prices.json ] || { echo "../shared/data is missing: the tests read the shared price file and evaluation sets from there." >&2; exit 1; }

# --- build and test ------------------------------------------------------------------------------
dotnet restore Bursar.slnx --nologo -v q
dotnet build Bursar.slnx -c Release --no-restore --nologo -v q -clp:ErrorsOnly

log=$(mktemp)
set +e
dotnet test Bursar.slnx -c Release --no-build --nologo 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e

passed=$(grep -oE 'Passed: +[0-9]+' "$log" | awk '{s+=$2} END {print s+0}')
failed=$(grep -oE 'Failed: +[0-9]+' "$log" | awk '{s+=$2} END {print s+0}')
skipped=$(grep -oE 'Skipped: +[0-9]+' "$log" | awk '{s+=$2} END {print s+0}')
rm -f "$log"
echo
echo "Tests: ${passed} passed, ${failed} failed, ${skipped} skipped"
[ "$passed" -gt 0 ] || { echo "No test ran." >&2; exit 1; }
exit "$status"
