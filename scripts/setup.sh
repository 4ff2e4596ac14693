#!/usr/bin/env bash
# Installs every Debian package MoEfy Studio needs to build, test and run.
# Idempotent: packages already present are skipped; apt is only touched when
# something is missing. Run as root (or with sudo available).
#
#   scripts/setup.sh            what the build, the tests and the app need
#   scripts/setup.sh --fuzz     also clang and libFuzzer (see below)
#   scripts/setup.sh --bench    also the benchmark extras: the peer recipe of
#                               bench/peer/ (scikit-learn, scipy, the gpmetis
#                               binary), used only by build/bench/bench_peer
#   scripts/setup.sh --corpus   also the SWORD Bible modules and diatheke that
#                               scripts/data/build_bible_corpus.sh reads to
#                               rebuild data/corpus/bible-en-es/ (the corpus is
#                               committed: CI and the tests never need them)
set -euo pipefail

PKGS=(
  build-essential cmake ninja-build pkg-config git ccache
  qt6-base-dev qt6-svg-dev libqt6svg6 libgl-dev
  libqcustomplot-dev libqcustomplot2.1-qt6
  libtorch-dev libopenblas0-openmp
  libmetis-dev libeigen3-dev nlohmann-json3-dev
  libonig-dev libsentencepiece-dev libcairo2-dev libgraphviz-dev
  python3-numpy python3-scipy python3-torch
  xvfb xauth fonts-dejavu-core pngquant
  clang-format
  openmpi-bin libopenmpi-dev
)

# Optional extras, installed only when asked (not needed to build or test):
#   --fuzz  (or MOEFY_SETUP_EXTRAS=fuzz): clang + its libFuzzer/sanitizer runtimes
#           for -DMOEFY_BUILD_FUZZ=ON; the seed-corpus regression runs in CTest
#           need only the normal toolchain.
#   --bench: the peer recipe's Python stack (bench/peer/).
#   --corpus: diatheke + the World English Bible and Reina-Valera 1909 modules
#           (public domain), read only by scripts/data/build_bible_corpus.py.
FUZZ_PKGS=(clang libclang-rt-dev)
BENCH_PKGS=(python3-sklearn metis)
CORPUS_PKGS=(diatheke sword-text-web sword-text-sparv)
if [[ " ${MOEFY_SETUP_EXTRAS:-} " == *" fuzz "* ]]; then
  PKGS+=("${FUZZ_PKGS[@]}")
fi
for arg in "$@"; do
  case "$arg" in
    --bench) PKGS+=("${BENCH_PKGS[@]}") ;;
    --fuzz) PKGS+=("${FUZZ_PKGS[@]}") ;;
    --corpus) PKGS+=("${CORPUS_PKGS[@]}") ;;
    *) echo "setup: unknown option $arg (known: --bench, --corpus, --fuzz)" >&2; exit 2 ;;
  esac
done

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  echo "setup: all packages present"
fi
