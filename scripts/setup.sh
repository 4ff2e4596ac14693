#!/usr/bin/env bash
# Installs every Debian package MoEfy Studio needs to build, test and run.
# Idempotent: packages already present are skipped; apt is only touched when
# something is missing. Run as root (or with sudo available).
set -euo pipefail

PKGS=(
  build-essential cmake ninja-build pkg-config git ccache
  qt6-base-dev qt6-svg-dev libqt6svg6 libgl-dev
  libqcustomplot-dev libqcustomplot2.1-qt6
  libtorch-dev libopenblas0-openmp
  libmetis-dev libeigen3-dev nlohmann-json3-dev
  libonig-dev libsentencepiece-dev libcairo2-dev libgraphviz-dev
  python3-numpy python3-torch
  xvfb xauth fonts-dejavu-core pngquant
)

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
