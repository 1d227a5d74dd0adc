#!/usr/bin/env bash
# make arm64-check: decode a small artifact on an emulated ARM64 (aarch64) Linux
# with the aarch64 wheels of numpy, onnxruntime and ai-edge-litert, and compare
# every string with x86's: greedy (step and fused), beam and seeded sampling, on
# both backends (ONNX and ORT files on ONNX Runtime, TFLite on LiteRT), fp32 and
# int8. Fails on any difference.
#
# The aarch64 root (Debian bookworm, minbase + python3) and the wheels are cached
# in .cache/arm64 (ignored by git): a second run skips the setup.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
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

if [ ! -f "$WORK/artifact/artifact.json" ]; then
    echo "arm64-check: training and exporting a tiny model (fp32 and int8; ONNX, ORT, TFLite)"
    "$PY" -m train --samples 800 --epochs 3 --latent-dim 32 --batch-size 32 --test-size 24 \
        --seed 1 --quiet --out "$WORK/model" --force >/dev/null
    "$PY" -m export "$WORK/model/model.keras" --out "$WORK/artifact" --quantize int8 --ort \
        --check-samples 24 --force >/dev/null
fi
TEXTS=$WORK/model/heldout.tsv

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
