#!/usr/bin/env bash
# Opening cost against file size: converts a model with ~1 MiB of embedding tables and the same
# model with ~1.1 GiB, then times "open, validate, compile, first prediction" for each, in one
# run, and the conversion throughput of the large one. Needs numpy + safetensors (pip).
# Usage: bash Benchmarks/open_time.sh [workdir]
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-${TMPDIR:-/tmp}/swift-mmoe-open-time}
mkdir -p "$work"
swift build -c release --product mmoe-convert >/dev/null
tool=.build/release/mmoe-convert
[ -f "$work/large.safetensors" ] || python3 Benchmarks/make_open_time_models.py "$work"
for size in small large; do
    start=$(date +%s.%N)
    $tool convert "$work/$size.safetensors" --spec "$work/$size.json" -o "$work/$size.mmoe" >/dev/null 2>&1
    end=$(date +%s.%N)
    bytes=$(stat -c %s "$work/$size.safetensors")
    echo "convert $size: $(python3 -c "print(f'{$bytes/2**20:.1f} MiB in {$end-$start:.3f} s = {$bytes/1e9/($end-$start):.2f} GB/s')")"
done
# Interleave the two so that page-cache and frequency effects hit both alike.
for round in 1 2 3; do
    for size in small large; do
        echo "round $round $size: $($tool bench "$work/$size.mmoe" --opens 20 --batch 1 --seconds 0.1 | head -1)"
    done
done
