#!/usr/bin/env bash
# Installs the C libraries swift-mmoe links (HDF5, zlib, OpenBLAS) and pkg-config, when missing,
# and what the tests use to look at a gates report as a person would (rsvg-convert, DejaVu fonts).
# Debian/Ubuntu; needs root (or sudo) only when something is missing.
set -euo pipefail
need=()
for pkg in libhdf5-dev zlib1g-dev libopenblas-dev pkg-config librsvg2-bin fonts-dejavu-core; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
    echo "installing: ${need[*]}"
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update
    $sudo apt-get install -y "${need[@]}"
fi
