#!/usr/bin/env bash
# Builds and runs Examples/RankStdin, a small program that embeds the runtime with `import MMoE`,
# on a converted fixture, and checks its ranking against `mmoe-convert rank` and that it does
# not link libhdf5. Run by scripts/test.sh after the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
swift build --product mmoe-convert > /dev/null
swift build --package-path Examples/RankStdin > /dev/null
tool=.build/debug/mmoe-convert
example=Examples/RankStdin/.build/debug/rank-stdin
if ldd "$example" | grep -q hdf5; then
    echo "example-embed: rank-stdin links libhdf5; the MMoE product must not" >&2
    exit 1
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fixture=fixtures/torch/rechub_mmoe
"$tool" convert "$fixture/model.pt" --spec "$fixture/conversion.json" -o "$tmp/m.mmoe" --fusion 'sum:click=1,watch=0.1' > /dev/null 2>&1
# The same request as JSON lines (user first) and as files for `mmoe-convert rank`.
python3 - "$fixture/inputs.npz" "$tmp" <<'PY'
import json, sys, zipfile, struct
path, out = sys.argv[1], sys.argv[2]

def arrays(path):
    """The .npz members as (shape, list of numbers): NumPy's format read with the standard library."""
    result = {}
    with zipfile.ZipFile(path) as z:
        for name in z.namelist():
            data = z.read(name)
            header_len = struct.unpack("<H", data[8:10])[0]
            header = eval(data[10:10 + header_len].decode("latin1"), {"__builtins__": {}}, {"False": False, "True": True})
            body = data[10 + header_len:]
            code = {"<f4": "f", "<i8": "q"}[header["descr"]]
            count = 1
            for d in header["shape"]:
                count *= d
            result[name[:-4]] = (header["shape"], list(struct.unpack("<%d%s" % (count, code), body[:count * struct.calcsize(code)])))
    return result

a = arrays(path)
rows = a["age"][0][0]
user = {"user id": a["user id"][1][0], "age": a["age"][1][0]}
with open(out + "/requests.jsonl", "w") as f:
    f.write(json.dumps(user) + "\n")
    for r in range(rows):
        item = {}
        for name, (shape, values) in a.items():
            if name in user:
                continue
            per = 1 if len(shape) == 1 else shape[1]
            chunk = values[r * per:(r + 1) * per]
            item[name] = chunk[0] if len(shape) == 1 else chunk
        f.write(json.dumps(item) + "\n")
with open(out + "/user.json", "w") as f:
    json.dump(user, f)
PY
"$example" "$tmp/m.mmoe" 5 < "$tmp/requests.jsonl" > "$tmp/embedded.txt"
python3 - "$fixture/inputs.npz" "$tmp/items.npz" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as src, zipfile.ZipFile(sys.argv[2], "w") as dst:
    for name in src.namelist():
        if name not in ("user id.npy", "age.npy"):
            dst.writestr(name, src.read(name))
PY
"$tool" rank "$tmp/m.mmoe" --user "$tmp/user.json" --candidates "$tmp/items.npz" --user-features "user id,age" --top 5 --json > "$tmp/cli.json"
python3 - "$tmp/embedded.txt" "$tmp/cli.json" <<'PY'
import json, sys
embedded = [line.split("\t") for line in open(sys.argv[1]).read().split("\n") if line]
cli = json.load(open(sys.argv[2]))["top"]
assert [int(e[1]) for e in embedded] == [c["candidate"] for c in cli], (embedded, cli)
assert all(abs(float(e[2]) - c["score"]) < 1e-6 for e, c in zip(embedded, cli)), (embedded, cli)
print("example-embed: rank-stdin (import MMoE, no libhdf5) ranks as mmoe-convert rank:", [int(e[1]) for e in embedded])
PY
