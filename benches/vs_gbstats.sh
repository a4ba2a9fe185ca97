#!/usr/bin/env bash
# hypod analyze --json against GrowthBook's gbstats computing the same per-experiment
# statistics on the same history, end to end, side by side in one run.
#
#   benches/vs_gbstats.sh [SIZES...]        (default: 1000 20000 100000)
#
# For each size it generates a history (benches/vs_gbstats/gen_history.py), imports it into a
# fresh SQLite database (timed apart), then times `hypod analyze --json > file` and
# `gbstats_analyze.py history.ndjson > file` (reads the file, tests every treatment, writes
# JSON) and records the peak RSS of each. Prints a table with the ratio and hypod's scaling
# from the smallest to the largest size. Needs python3 with venv; gbstats 0.8 is installed in
# a virtualenv under target/ the first time (PyPI).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
SIZES=("$@"); [ ${#SIZES[@]} -eq 0 ] && SIZES=(1000 20000 100000)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
WORK=$TARGET/bench-vs-gbstats; mkdir -p "$WORK"
VENV=$WORK/venv
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import gbstats' 2>/dev/null; then
  echo "== installing gbstats 0.8 in $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q 'gbstats==0.8.0'
fi
echo "== building hypod (release)"
cargo build --release -q
HYPOD=$TARGET/release/hypod

# Wall seconds and peak RSS (MB) of a command, its stdout to a file.
measure() { # out-file command...
  local out=$1; shift
  local t0 t1 rss
  t0=$(date +%s.%N)
  rss=$( { /usr/bin/time -f '%M' "$@" > "$out"; } 2>&1 | tail -1 )
  t1=$(date +%s.%N)
  echo "$(echo "$t1 - $t0" | bc) $((rss / 1024))"
}

printf '\n%-8s %10s %10s %12s %10s %12s %8s\n' experiments import_s hypod_s hypod_rss_MB gbstats_s gbstats_rss_MB ratio
declare -A HYPOD_S
for n in "${SIZES[@]}"; do
  dir=$WORK/$n; rm -rf "$dir"; mkdir -p "$dir"
  python3 benches/vs_gbstats/gen_history.py "$n" > "$dir/history.ndjson"
  cat > "$dir/hypod.toml" <<TOML
[database]
url = "sqlite://hypod.db"
TOML
  read -r import_s _ < <(measure "$dir/import.txt" "$HYPOD" --config "$dir/hypod.toml" import "$dir/history.ndjson")
  read -r hypod_s hypod_rss < <(measure "$dir/hypod.json" "$HYPOD" --config "$dir/hypod.toml" analyze --json)
  read -r gb_s gb_rss < <(measure "$dir/gbstats.json" "$VENV/bin/python" benches/vs_gbstats/gbstats_analyze.py "$dir/history.ndjson")
  HYPOD_S[$n]=$hypod_s
  printf '%-8s %10.2f %10.3f %12s %10.2f %12s %7.0fx\n' "$n" "$import_s" "$hypod_s" "$hypod_rss" "$gb_s" "$gb_rss" "$(echo "$gb_s / $hypod_s" | bc -l)"
done
first=${SIZES[0]}; last=${SIZES[${#SIZES[@]}-1]}
if [ "$first" != "$last" ]; then
  printf '\nhypod scaling %s -> %s experiments: %.1fx the time for %.0fx the experiments\n' \
    "$first" "$last" "$(echo "${HYPOD_S[$last]} / ${HYPOD_S[$first]}" | bc -l)" "$(echo "$last / $first" | bc -l)"
fi
