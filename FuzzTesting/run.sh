#!/usr/bin/env bash
# Builds the libFuzzer harness and fuzzes one parser for a while.
#   bash FuzzTesting/run.sh TARGET [SECONDS]
# TARGET: mmoe hdf5 torch safetensors npy npz csv conversion-spec model-spec tf-index keras keras-config onnx onnx-export
# Seeds come from fixtures/ (copied into FuzzTesting/corpus/TARGET); crashes are written to
# FuzzTesting/crashes/TARGET; copy fixed ones to fixtures/fuzz-regressions/TARGET/ so that
# the normal test suite replays them.
set -euo pipefail
cd "$(dirname "$0")"
target=${1:?target}
seconds=${2:-600}
mkdir -p .deps && ln -sfn ../.. .deps/swift-mmoe
# SwiftPM can keep a stale build plan for the path dependency and miss files added to it.
[ -n "${SKIP_BUILD:-}" ] || rm -f .build/release.yaml .build/release/description.json
[ -n "${SKIP_BUILD:-}" ] || swift build -c release --product mmoe-fuzz -Xswiftc -sanitize=fuzzer,address -Xswiftc -parse-as-library
bin=$(swift build -c release --product mmoe-fuzz -Xswiftc -sanitize=fuzzer,address -Xswiftc -parse-as-library --show-bin-path)/mmoe-fuzz
corpus=corpus/$target
mkdir -p "$corpus" "crashes/$target"
seed() { for f in "$@"; do [ -f "$f" ] && cp -n "$f" "$corpus/" 2>/dev/null || true; done; }
case $target in
    mmoe) seed ../fixtures/damaged/valid.mmoe ../fixtures/damaged/mmoe/*.mmoe ;;
    hdf5) seed ../fixtures/damaged/valid.h5 ../fixtures/damaged/hdf5/*.h5 ;;
    torch) seed ../fixtures/torch/*/model.pt ../fixtures/torch/*/*.ckpt ../fixtures/torch/*/*_checkpoint.pt ../fixtures/hostile/*.pt ;;
    safetensors) seed ../fixtures/torch/plain_*/model.safetensors ../fixtures/hostile/*.safetensors ;;
    npz) seed ../fixtures/torch/plain_*/inputs.npz ../fixtures/hostile/*.npz ;;
    npy) python3 -c "import numpy as np; np.save('$corpus/a.npy', np.arange(6, dtype=np.float32).reshape(2,3)); np.save('$corpus/b.npy', np.arange(4)); np.save('$corpus/c.npy', np.array(['ab', 'cde']))" ;;
    csv) printf 'd,s,q,w,x\n1 2,3,1 2 3,a b,0.5\n0.5 -1,9,4,zz,-3\n' > "$corpus/seed.csv" ;;
    onnx-export)
        # Exports of fixtures written by the project's own (debug) build of mmoe-convert.
        tool=../.build/debug/mmoe-convert
        for f in rechub_mmoe rechub_ple rechub_aitm; do
            "$tool" convert ../fixtures/torch/$f/model.pt --spec ../fixtures/torch/$f/conversion.json -o "$corpus/$f.onnx" > /dev/null 2>&1 || true
        done ;;
    conversion-spec) seed ../fixtures/torch/plain_*/conversion.json ;;
    tf-index) seed ../fixtures/keras/*/tf_checkpoint/model.index ;;
    onnx) seed ../fixtures/torch/*/model.legacy*.onnx ../fixtures/torch/*/model.dynamo18.onnx ../fixtures/hostile/onnx_*.onnx ;;
    keras) seed ../fixtures/keras/*/model.h5 ../fixtures/keras/*/model_full.h5 ../fixtures/keras3/*/model.weights.h5 ;;
    keras-config)
        for f in ../fixtures/keras/*/model_full.h5; do
            # needs h5py (PYTHON names an interpreter that has it)
            "${PYTHON:-python3}" -c "import h5py,sys; sys.stdout.write(h5py.File(sys.argv[1]).attrs['model_config'])" "$f" > "$corpus/$(basename "$(dirname "$f")").json" 2>/dev/null || true
        done
        for f in ../fixtures/keras3/*/model.keras; do
            python3 -c "import zipfile,sys; sys.stdout.write(zipfile.ZipFile(sys.argv[1]).read('config.json').decode())" "$f" > "$corpus/$(basename "$(dirname "$f")").keras.json"
        done ;;
    model-spec) python3 -c "import json; print(json.dumps(json.load(open('../fixtures/torch/plain_mmoe/conversion.json'))['spec']))" > "$corpus/spec.json" ;;
esac
export MMOE_FUZZ_TARGET=$target SWIFT_BACKTRACE=enable=no
case $target in
    hdf5|keras)
        # libhdf5's own leaks (fixtures/fuzz-findings/keras/libhdf5-vlen-conversion-leak.h5) are
        # not ours; a huge allocation returns NULL to libhdf5 as it would without AddressSanitizer.
        # Each input also runs in a forked child first (see Fuzz.swift).
        printf 'leak:libhdf5\n' > "$corpus/../lsan-libhdf5.supp"
        export LSAN_OPTIONS="suppressions=$(cd "$corpus/.." && pwd)/lsan-libhdf5.supp"
        # libhdf5 keeps free lists that only grow: more room for the process, a smaller quarantine.
        export ASAN_OPTIONS="allocator_may_return_null=1:quarantine_size_mb=64${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
        rss_limit=6144
        extra=(-malloc_limit_mb=1000000) ;;
esac
"$bin" "$corpus" -max_total_time="$seconds" -runs="${RUNS:--1}" -rss_limit_mb="${rss_limit:-2048}" ${extra[@]+"${extra[@]}"} -timeout=10 -artifact_prefix="crashes/$target/" -print_final_stats=1 2>&1 | tee "crashes/$target/last-run.log" | tail -20
grep -h "isolated libhdf5 faults so far" "crashes/$target/last-run.log" | tail -1 || true
