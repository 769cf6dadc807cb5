#!/usr/bin/env bash
# Bursar's one test command: installs what the tests need, builds, runs every test, stops what it started.
# .ci/run calls exactly this. Tests read public data from ../shared/data (never copied into the project).
set -euo pipefail
cd "$(dirname "$0")"

started=()
scratch=()
cleanup() {
  for pid in "${started[@]:-}"; do [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; done
  for dir in "${scratch[@]:-}"; do [ -n "$dir" ] && rm -rf "$dir"; done
}
trap cleanup EXIT

# --- what the tests need -------------------------------------------------------------------------
# The .NET SDK comes with the machine; NuGet packages restore from the registry.
# Node.js and npm (for the official openai and @anthropic-ai/sdk clients) come from Debian if missing.
# Debian's Chromium (/usr/bin/chromium) for the dashboard's browser test, driven by Playwright for .NET.
# Debian's redis-server for the shared response cache: the tests start their own servers on free ports and stop them.
# Debian's postgresql for the PostgreSQL store: the tests run initdb and pg_ctl themselves (as the postgres user when root),
# each on a free port in a temporary folder, and stop the server at the end. Debian keeps them in /usr/lib/postgresql/*/bin.
command -v dotnet >/dev/null || { echo "The .NET 10 SDK is required (dotnet not on PATH)." >&2; exit 1; }
sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
need=()
{ command -v node >/dev/null && command -v npm >/dev/null; } || need+=(nodejs npm)
[ -x /usr/bin/chromium ] || need+=(chromium)
command -v redis-server >/dev/null || need+=(redis-server)
compgen -G "/usr/lib/postgresql/*/bin/pg_ctl" >/dev/null || need+=(postgresql)
[ -x /usr/sbin/nginx ] || need+=(nginx-light) # the field benchmark's floor (proxy_pass), in its smoke below
if [ ${#need[@]} -gt 0 ]; then
  echo "installing from Debian: ${need[*]}"
  $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi
[ -f ../shared/data/litellm_model_prices.json ] || { echo "../shared/data is missing: the tests read the shared price file and evaluation sets from there." >&2; exit 1; }

# --- build and test ------------------------------------------------------------------------------
dotnet restore Bursar.slnx --nologo -v q
dotnet build Bursar.slnx -c Release --no-restore --nologo -v q -clp:ErrorsOnly

log=$(mktemp)
scratch+=("$log")
set +e
dotnet test Bursar.slnx -c Release --no-build --nologo 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e

# --- the bursar .NET tool, packed and installed as a user would ---------------------------------------
tools=$(mktemp -d)
scratch+=("$tools")
dotnet pack src/Bursar.Cli -c Release --no-build --nologo -v q -o "$tools/artifacts" >/dev/null
# the .NET library face, packed as the NuGet package an app references, with the packages it depends on
for p in Bursar.Core Bursar.Providers Bursar.Storage.Sqlite Bursar.Storage.PostgreSql Bursar.Caching.Redis Bursar.Embeddings.Onnx Bursar.Hosting Bursar.Extensions.AI; do
  dotnet pack "src/$p" -c Release --no-build --nologo -v q -o "$tools/artifacts" >/dev/null
done
ls "$tools/artifacts"/Bursar.Extensions.AI.*.nupkg >/dev/null || { echo "the Bursar.Extensions.AI package was not produced" >&2; status=1; }
dotnet tool install Bursar --tool-path "$tools/bin" --add-source "$tools/artifacts" >/dev/null
"$tools/bin/bursar" --help >/dev/null || { echo "the installed bursar tool does not run" >&2; status=1; }

# --- the npm SDKs against a real gateway process (started by the installed tool) ----------------------
(cd tests/sdk-js && npm ci --no-audit --no-fund --loglevel=error)
data=$(mktemp -d)
scratch+=("$data")
bursar=("$tools/bin/bursar" --data-dir "$data")
key=$("${bursar[@]}" keys create --team sdk-js 2>/dev/null)
port=$((20000 + RANDOM % 20000))
"${bursar[@]}" serve --urls "http://127.0.0.1:$port" > "$data/serve.log" 2>&1 &
started+=($!)
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/health/live" >/dev/null && break; sleep 0.2; done
set +e
(cd tests/sdk-js && BURSAR_URL="http://127.0.0.1:$port" BURSAR_KEY="$key" node --test 2>&1) | tee -a "$log"
js_status=${PIPESTATUS[0]}
set -e
[ "$js_status" -eq 0 ] || { echo "--- gateway log ---"; tail -50 "$data/serve.log"; }

# --- the field benchmark's smoke: every cell (both dialects, JSON and SSE, throughput, a slow upstream, paced streams,
# cold start, nginx as the floor, Portkey's npm gateway as a peer) runs for a moment without errors; timings are not asserted
# (bench/RESULTS.md has them)
set +e
npm ci --prefix bench/portkey --no-audit --no-fund --loglevel=error >/dev/null 2>&1 || echo "bench/portkey: npm ci failed; the field smoke runs without the Portkey peer"
dotnet bench/Bursar.LoadBench/bin/Release/net10.0/Bursar.LoadBench.dll field --smoke --base-port $((40000 + RANDOM % 10000)) > "$data/field.log" 2>&1
field_status=$?
set -e
grep -h "left out of this run" -A3 "$data/field.log" || true
if [ "$field_status" -eq 0 ]; then echo "field benchmark smoke: every cell ran without errors"; echo "# pass 1" >> "$log"
else echo "field benchmark smoke FAILED:"; tail -40 "$data/field.log"; echo "# fail 1" >> "$log"; [ "$status" -eq 0 ] && status=1; fi
set +e
dotnet bench/Bursar.LoadBench/bin/Release/net10.0/Bursar.LoadBench.dll field --only levers --smoke --no-portkey --base-port $((40000 + RANDOM % 10000)) > "$data/levers.log" 2>&1
levers_status=$?
set -e
if [ "$levers_status" -eq 0 ]; then echo "lever costs smoke: every configuration ran without errors"; echo "# pass 1" >> "$log"
else echo "lever costs smoke FAILED:"; tail -40 "$data/levers.log"; echo "# fail 1" >> "$log"; [ "$status" -eq 0 ] && status=1; fi

passed=$(( $(grep -oE 'Passed: +[0-9]+' "$log" | awk '{s+=$2} END {print s+0}') + $(grep -oE '^# pass [0-9]+' "$log" | awk '{s+=$3} END {print s+0}') ))
failed=$(( $(grep -oE 'Failed: +[0-9]+' "$log" | awk '{s+=$2} END {print s+0}') + $(grep -oE '^# fail [0-9]+' "$log" | awk '{s+=$3} END {print s+0}') ))
skipped=$(grep -oE 'Skipped: +[0-9]+' "$log" | awk '{s+=$2} END {print s+0}')
rm -f "$log"
[ "$status" -eq 0 ] && status=$js_status
echo
echo "Tests: ${passed} passed, ${failed} failed, ${skipped} skipped"
[ "$passed" -gt 0 ] || { echo "No test ran." >&2; exit 1; }
exit "$status"
