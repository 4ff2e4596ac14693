#!/usr/bin/env bash
# Recording throughput with 1 and with N MPI ranks of one thread each, in the
# same run (issue 18; docs/scale.md "Several processes"). Each configuration
# records the same tokens of the bundled corpus through the bundled model
# REPEATS times, alternating; the script prints each run, the medians in
# tokens/s and their ratio, and checks that the N-rank recording equals the
# single-process one (stats, co-activation, samples: byte-identical files).
#
#   bash bench/bench_mpi_record.sh [--ranks N] [--tokens T] [--repeats R] [--moefy PATH]
#
# Needs Open MPI (scripts/setup.sh installs it) and a build that found it.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
moefy="$here/build/app/moefy"
ranks=2 tokens=131072 repeats=3
while [[ $# -gt 0 ]]; do
  case "$1" in
    --ranks) ranks="$2"; shift 2 ;;
    --tokens) tokens="$2"; shift 2 ;;
    --repeats) repeats="$2"; shift 2 ;;
    --moefy) moefy="$2"; shift 2 ;;
    *) echo "bench_mpi_record: unknown option $1" >&2; exit 2 ;;
  esac
done
command -v mpirun >/dev/null || { echo "bench_mpi_record: mpirun not found (scripts/setup.sh installs openmpi-bin)" >&2; exit 2; }
[[ -x "$moefy" ]] || { echo "bench_mpi_record: $moefy not built" >&2; exit 2; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl_vader_single_copy_mechanism=none
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
model="$here/data/models/brown-relu" corpus="$here/data/corpus/brown"
args=("$model" "$corpus" --tokens "$tokens" --seq-len 256 --batch 8 --chunk 16 --samples 8192 --quiet --force)

now() { date +%s.%N; }
one=() many=()
for ((i = 1; i <= repeats; i++)); do
  t0=$(now); MOEFY_THREADS=1 "$moefy" record "${args[@]}" --out "$work/one" >/dev/null; t1=$(now)
  one+=("$(awk -v n="$tokens" -v a="$t0" -v b="$t1" 'BEGIN {print n / (b - a)}')")
  t0=$(now); mpirun --oversubscribe -np "$ranks" -x MOEFY_THREADS=1 "$moefy" record "${args[@]}" --out "$work/many" >/dev/null; t1=$(now)
  many+=("$(awk -v n="$tokens" -v a="$t0" -v b="$t1" 'BEGIN {print n / (b - a)}')")
  printf 'run %d: 1 rank %8.0f tok/s   %d ranks %8.0f tok/s\n' "$i" "${one[-1]}" "$ranks" "${many[-1]}"
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
m1=$(median "${one[@]}") mn=$(median "${many[@]}")
printf 'median: 1 rank x 1 thread %.0f tok/s, %d ranks x 1 thread %.0f tok/s, ratio %.2fx (%d tokens, %d runs each, whole process incl. model load)\n' \
  "$m1" "$ranks" "$mn" "$(awk -v a="$mn" -v b="$m1" 'BEGIN {print a / b}')" "$tokens" "$repeats"
for f in stats coact samples; do
  cmp -s "$work/one/$f.safetensors" "$work/many/$f.safetensors" || { echo "bench_mpi_record: $f.safetensors differs between 1 and $ranks ranks" >&2; exit 1; }
done
echo "the $ranks-rank recording is byte-identical to the single-process one"
