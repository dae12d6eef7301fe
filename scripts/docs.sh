#!/usr/bin/env bash
# Builds the DocC documentation of the public modules (swift-docc-plugin) into .build/docs/,
# warnings refused. Run by scripts/test.sh; open .build/docs/<Module>.doccarchive with Xcode or
# `docc preview`.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .build/docs
for target in MMoECore MMoERuntime MMoEFormat MMoEImport; do
    swift package --allow-writing-to-directory .build/docs generate-documentation --target "$target" \
        --warnings-as-errors --output-path ".build/docs/$target.doccarchive" > ".build/docs/$target.log" 2>&1 || {
        cat ".build/docs/$target.log" >&2
        exit 1
    }
    echo "docs: $target -> .build/docs/$target.doccarchive"
done
