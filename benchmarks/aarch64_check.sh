#!/usr/bin/env bash
# aarch64 check without hardware: score the same files with the same bundle on x86 and in an
# emulated arm64 Debian (qemu-user) as a Raspberry Pi 4 (cortex-a72, no dot-product) and a
# Raspberry Pi 5 (cortex-a76, dot-product); fail if any decision differs or any score
# differs by more than the bundle's parity tolerance.
#
# Why: onnxruntime picks different kernels per ISA (NEON vs dot-product on arm64, AVX2/
# AVX-512 on x86). Emulated *time* means nothing; emulated *outputs* are real arm64 code.
#
# Usage (root: debootstrap and chroot need it):
#   sudo benchmarks/aarch64_check.sh [--bundle DIR] [--out FILE] [--cpus "cortex-a72 cortex-a76"]
# Environment:
#   EDGE_ARM64_ROOT    cached arm64 root (default /var/cache/edge-detector-arm64); delete to rebuild
#   EDGE_ARM64_MIRROR  Debian mirror (default http://deb.debian.org/debian)
#   EDGE_ARM64_EXEC    binfmt | explicit | auto (default auto: binfmt if it can be enabled, else
#                      run python through qemu-aarch64-static explicitly. Without binfmt the root
#                      is built with `debootstrap --foreign` plus `dpkg-deb -x` on the host, since
#                      debootstrap's second stage would exec arm64 programs; maintainer scripts
#                      are then not run, which python and the wheels do not need)
#   EDGE_HOST_PYTHON   x86 python with the project (default: .venv/bin/python, else python3)
#   EDGE_ARM64_KEEP    1 = keep the work folder (default: removed)
#   EDGE_ARM64_FP16    0 = skip the fp16 variant (default: also convert and check it; needs onnx)
# Exit: 0 all runs match x86; 1 mismatch; 2 setup problem (message says which step).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROOT=${EDGE_ARM64_ROOT:-/var/cache/edge-detector-arm64}
MIRROR=${EDGE_ARM64_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
EXEC_MODE=${EDGE_ARM64_EXEC:-auto}
HOST_PY=${EDGE_HOST_PYTHON:-}
[[ -z "$HOST_PY" && -x "$REPO/.venv/bin/python" ]] && HOST_PY="$REPO/.venv/bin/python"
HOST_PY=${HOST_PY:-python3}
BUNDLE=""
OUT="$REPO/benchmarks/results/aarch64_check.json"
CPUS="cortex-a72 cortex-a76"
VENV=/opt/edge-venv            # inside the root
ROOT_MARK=.edge-detector-root  # debootstrap finished
PKGS="numpy onnxruntime soundfile click"

while [[ $# -gt 0 ]]; do
  case "$1" in
    --bundle) BUNDLE=$(realpath "$2"); shift 2 ;;
    --out) OUT=$(realpath -m "$2"); shift 2 ;;
    --cpus) CPUS=$2; shift 2 ;;
    -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
    *) echo "aarch64_check: unknown argument $1" >&2; exit 2 ;;
  esac
done

say() { printf '[aarch64_check %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { say "ERROR: $*"; exit 2; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
T_START=$(now)
declare -A T

[[ $(id -u) -eq 0 ]] || die "run as root (debootstrap, chroot and mounting /proc need it)"
for tool in debootstrap chroot qemu-aarch64-static; do
  command -v "$tool" >/dev/null || die "$tool missing: apt-get install qemu-user-static binfmt-support debootstrap"
done

# ---------------------------------------------------------------- binfmt: run arm64 ELF files through qemu
binfmt_ready() { [[ -r /proc/sys/fs/binfmt_misc/qemu-aarch64 ]] && head -1 /proc/sys/fs/binfmt_misc/qemu-aarch64 | grep -q enabled; }
enable_binfmt() {
  binfmt_ready && return 0
  if [[ ! -e /proc/sys/fs/binfmt_misc/register ]]; then
    # Containers usually have no binfmt_misc mounted; mounting it needs CAP_SYS_ADMIN.
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null || { say "cannot mount binfmt_misc"; return 1; }
  fi
  command -v update-binfmts >/dev/null && update-binfmts --enable qemu-aarch64 2>/dev/null || true
  if ! binfmt_ready && [[ -w /proc/sys/fs/binfmt_misc/register ]]; then
    # Same registration binfmt-support writes; F = open the interpreter now, so it works inside the chroot.
    echo ':qemu-aarch64:M::\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00:\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff:/usr/bin/qemu-aarch64-static:FP' \
      > /proc/sys/fs/binfmt_misc/register 2>/dev/null || say "writing /proc/sys/fs/binfmt_misc/register failed"
  fi
  binfmt_ready
}
if [[ $EXEC_MODE == explicit ]]; then
  HAVE_BINFMT=0  # asked not to use it: leave the kernel's registrations alone
elif enable_binfmt; then
  HAVE_BINFMT=1
else
  HAVE_BINFMT=0
  say "binfmt for aarch64 is not available: $(cat /proc/sys/fs/binfmt_misc/qemu-aarch64 2>&1 | head -1)"
fi
case "$EXEC_MODE" in
  auto) [[ $HAVE_BINFMT == 1 ]] && EXEC_MODE=binfmt || EXEC_MODE=explicit ;;
  binfmt) [[ $HAVE_BINFMT == 1 ]] || die "EDGE_ARM64_EXEC=binfmt but binfmt cannot be enabled here" ;;
  explicit) ;;
  *) die "EDGE_ARM64_EXEC must be binfmt, explicit or auto" ;;
esac
say "arm64 root $ROOT; executing arm64 code via $EXEC_MODE"

# ---------------------------------------------------------------- mounts (only /proc: /sys makes import onnxruntime crash)
MOUNTED=0
WORK=""
cleanup() {
  if [[ $MOUNTED == 1 ]]; then umount "$ROOT/proc" 2>/dev/null || umount -l "$ROOT/proc" 2>/dev/null || true; fi
  if [[ -n "$WORK" && "${EDGE_ARM64_KEEP:-0}" != 1 ]]; then rm -rf --one-file-system "$WORK" "$ROOT/opt/edge-work"; fi
}
trap cleanup EXIT
mount_proc() {
  mountpoint -q "$ROOT/proc" || { mount -t proc proc "$ROOT/proc"; MOUNTED=1; }
}

# Run a command inside the root: through binfmt, or by calling the interpreter ourselves
# (then only that one process is emulated: anything it execs must not be arm64).
in_root() {
  local cpu=$1; shift
  if [[ $EXEC_MODE == binfmt ]]; then
    env -i HOME=/root LANG=C.UTF-8 PATH=$VENV/bin:/usr/sbin:/usr/bin:/sbin:/bin QEMU_CPU="$cpu" chroot "$ROOT" "$@"
  else
    env -i HOME=/root LANG=C.UTF-8 PATH=$VENV/bin:/usr/sbin:/usr/bin:/sbin:/bin PYTHONPATH=/opt/edge-src \
      QEMU_CPU="$cpu" chroot "$ROOT" /usr/bin/qemu-aarch64-static -cpu "$cpu" "$@"
  fi
}

# ---------------------------------------------------------------- 1. the root (cached)
t0=$(now)
if [[ ! -f "$ROOT/$ROOT_MARK" ]]; then
  # A half-built root may still have /proc mounted from a killed run: never recurse into it.
  mountpoint -q "$ROOT/proc" 2>/dev/null && umount -l "$ROOT/proc"
  rm -rf --one-file-system "$ROOT"
  mkdir -p "$ROOT"
  if [[ $EXEC_MODE == binfmt ]]; then
    say "building arm64 $SUITE minbase root (debootstrap; several minutes, cached afterwards)"
    debootstrap --arch=arm64 --variant=minbase --include=python3,python3-venv,ca-certificates \
      "$SUITE" "$ROOT" "$MIRROR" >&2 || die "debootstrap failed (see the log above, and $ROOT/debootstrap/debootstrap.log)"
    echo "$(date -u +%FT%TZ) debootstrap" > "$ROOT/$ROOT_MARK"
  else
    say "building arm64 $SUITE minbase root without binfmt: debootstrap --foreign, then dpkg-deb -x of every package"
    debootstrap --foreign --arch=arm64 --variant=minbase --include=python3,python3-venv \
      "$SUITE" "$ROOT" "$MIRROR" >&2 || die "debootstrap --foreign failed (see $ROOT/debootstrap/debootstrap.log)"
    for deb in "$ROOT"/var/cache/apt/archives/*.deb; do dpkg-deb -x "$deb" "$ROOT" || die "dpkg-deb -x $deb failed"; done
    echo "$(date -u +%FT%TZ) debootstrap --foreign + dpkg-deb -x (unconfigured)" > "$ROOT/$ROOT_MARK"
  fi
else
  say "reusing cached root built $(cat "$ROOT/$ROOT_MARK")"
fi
# The interpreter inside the root: needed by explicit mode and by binfmt registrations without the F flag.
install -D -m 0755 "$(command -v qemu-aarch64-static)" "$ROOT/usr/bin/qemu-aarch64-static"
install -D -m 0755 "$(command -v qemu-aarch64-static)" "$ROOT/usr/libexec/qemu-binfmt/aarch64-binfmt-P"
cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf" 2>/dev/null || true
mount_proc
T[root]=$(elapsed "$t0")

# ---------------------------------------------------------------- 2. runtime wheels, pinned to the host's versions
t0=$(now)
PINS=$("$HOST_PY" - "$PKGS" <<'EOF'
import sys
from importlib.metadata import version
print(" ".join(f"{p}=={version(p)}" for p in sys.argv[1].split()))
EOF
)
PINS="$PINS wheel"
WHEELS="$ROOT/opt/wheels"
STAMP="$ROOT/opt/.edge-runtime-pins"
if [[ ! -x "$ROOT$VENV/bin/python" || "$(cat "$STAMP" 2>/dev/null)" != "$PINS" ]]; then
  say "downloading arm64 wheels on the host: $PINS"
  mkdir -p "$WHEELS"
  # Resolve on the host (fast) for the root's python 3.11 / glibc 2.36; pip inside the root installs them.
  "$HOST_PY" -m pip download -q --only-binary=:all: --platform manylinux_2_28_aarch64 --platform manylinux_2_17_aarch64 \
    --platform manylinux2014_aarch64 --python-version 3.11 --implementation cp --abi cp311 \
    -d "$WHEELS" $PINS > "$ROOT/opt/pip-download.log" 2>&1 \
    || die "pip download of arm64 wheels failed (see $ROOT/opt/pip-download.log)"
  say "creating $VENV inside the root and installing the runtime with pip (emulated)"
  rm -rf "$ROOT$VENV"
  if [[ $EXEC_MODE == binfmt ]]; then
    in_root cortex-a72 /usr/bin/python3 -m venv "$VENV" || die "python3 -m venv failed inside the root"
  else
    # ensurepip runs a subprocess, which explicit mode cannot emulate: make the venv without pip
    # and use the root's pip wheel from python3-venv directly.
    in_root cortex-a72 /usr/bin/python3 -m venv --without-pip "$VENV" || die "venv failed inside the root"
    PIPWHL=$(ls "$ROOT"/usr/share/python-wheels/pip-*.whl | head -1)
    in_root cortex-a72 "$VENV/bin/python" "${PIPWHL#$ROOT}/pip" install -q --no-index "${PIPWHL#$ROOT}" \
      || die "bootstrapping pip failed"
  fi
  in_root cortex-a72 "$VENV/bin/python" -m pip install -q --no-index --find-links /opt/wheels $PINS \
    || die "pip install of the runtime failed inside the root"
  echo "$PINS" > "$STAMP"
else
  say "reusing cached runtime in $VENV ($PINS)"
fi
T[runtime]=$(elapsed "$t0")

# ---------------------------------------------------------------- 3. this checkout's code, installed with --no-deps
t0=$(now)
SRC="$ROOT/opt/edge-src"
rm -rf "$SRC"
mkdir -p "$SRC"
tar -C "$REPO" --exclude='__pycache__' --exclude='*.egg-info' --exclude='*.onnx' -cf - \
  pyproject.toml README.md edge_detector firmware_config export quantize | tar -C "$SRC" -xf -
cp "$REPO/benchmarks/aarch64_check.py" "$ROOT/opt/edge-src-helper.py"
if [[ $EXEC_MODE == binfmt ]]; then
  in_root cortex-a72 "$VENV/bin/python" -m pip install -q --no-index --no-deps --no-build-isolation /opt/edge-src \
    || die "pip install --no-deps of the project failed inside the root"
else
  # Building a wheel runs the build backend in a subprocess, which explicit mode cannot emulate.
  say "explicit mode: using the copied source via PYTHONPATH instead of pip install"
fi
T[install]=$(elapsed "$t0")

# ---------------------------------------------------------------- 4. inputs and the x86 reference
t0=$(now)
WORK=$(mktemp -d /tmp/edge-aarch64.XXXXXX)
say "preparing synthetic audio and the bundle in $WORK"
NO_FP16=""
[[ "${EDGE_ARM64_FP16:-1}" == 0 ]] && NO_FP16=--no-fp16
"$HOST_PY" "$REPO/benchmarks/aarch64_check.py" prepare "$WORK" ${BUNDLE:+--bundle "$BUNDLE"} $NO_FP16 >&2 \
  || die "prepare failed"
VARIANTS=$(ls "$WORK/bundles")
bundle_args() { for v in $VARIANTS; do printf -- '--bundle %s/bundles/%s ' "$1" "$v"; done; }
# The x86 reference with the x86 profile's settings (2 threads: this is about outputs, not speed).
"$HOST_PY" "$REPO/benchmarks/aarch64_check.py" score "$WORK/audio" $(bundle_args "$WORK") --label x86_64 \
  --profile x86 --threads 2 --out "$WORK/x86_64.json" || die "scoring on x86 failed"
T[x86]=$(elapsed "$t0")
rm -rf "$ROOT/opt/edge-work"
cp -r "$WORK" "$ROOT/opt/edge-work"

# ---------------------------------------------------------------- 5. the same files under each emulated CPU
RUNS=()
for cpu in $CPUS; do
  t0=$(now)
  say "scoring under QEMU_CPU=$cpu"
  case "$cpu" in cortex-a72) PROFILE=(--profile pi4) ;; cortex-a76) PROFILE=(--profile pi5) ;; *) PROFILE=() ;; esac
  # The board's shipped profile (threads, spinning off): also proves the TOML files were installed.
  in_root "$cpu" "$VENV/bin/python" /opt/edge-src-helper.py score /opt/edge-work/audio $(bundle_args /opt/edge-work) \
      "${PROFILE[@]}" --label "$cpu" --out "/opt/edge-work/$cpu.json" >&2 || die "scoring under QEMU_CPU=$cpu failed"
  [[ -f "$ROOT/opt/edge-work/$cpu.json" ]] || die "scoring under $cpu produced no result"
  cp "$ROOT/opt/edge-work/$cpu.json" "$WORK/$cpu.json"
  RUNS+=("$WORK/$cpu.json")
  T[$cpu]=$(elapsed "$t0")
done

TOTAL=$(elapsed "$T_START")
EXTRA=$(printf '{"timing_s": {"root": %.1f, "runtime_install": %.1f, "project_install": %.1f, "x86_prepare_and_score": %.1f, %s "total": %.1f}, "exec_mode": "%s", "root": "%s", "command": "%s"}' \
  "${T[root]}" "${T[runtime]}" "${T[install]}" "${T[x86]}" \
  "$(for cpu in $CPUS; do printf '"%s": %.1f, ' "$cpu" "${T[$cpu]}"; done)" "$TOTAL" "$EXEC_MODE" "$ROOT" \
  "benchmarks/aarch64_check.sh${BUNDLE:+ --bundle $BUNDLE}")
set +e
"$HOST_PY" "$REPO/benchmarks/aarch64_check.py" compare "$WORK/x86_64.json" "${RUNS[@]}" --out "$OUT" --extra "$EXTRA"
rc=$?
set -e
say "wrote $OUT (total ${TOTAL%.*} s)"
exit $rc
