#!/usr/bin/env bash
# Installs what dsc needs to build and test, on Debian bookworm with Rust already present:
#   - MLIR/LLVM 22 development packages (melior links MLIR statically; bindgen needs libclang),
#   - ptxas from the PyPI package nvidia-cuda-nvcc-cu12, into the git-ignored .tools/cuda-nvcc,
#   - rustfmt and clippy (rustup components) and cargo-nextest, when missing and installable.
# Idempotent: prints one line per thing it installs and nothing when everything is present.
# Environment: DSC_SKIP_NEXTEST=1 skips the cargo-nextest install (tests then use `cargo test`).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

LLVM_VERSION=22
APT_PACKAGES=(
  "libmlir-${LLVM_VERSION}-dev"
  "mlir-${LLVM_VERSION}-tools"
  "llvm-${LLVM_VERSION}-dev"
  "libclang-${LLVM_VERSION}-dev"
  "libpolly-${LLVM_VERSION}-dev" # llvm-config --link-static lists Polly; tblgen and mlir-sys link it
  libzstd-dev
  libz3-dev
  libxml2-dev
  zlib1g-dev
)
NVCC_PACKAGE="nvidia-cuda-nvcc-cu12==12.9.86"
NVCC_DIR="$ROOT/.tools/cuda-nvcc"
PTXAS="$NVCC_DIR/nvidia/cuda_nvcc/bin/ptxas"

log() { printf 'setup: %s\n' "$*"; }
die() {
  printf 'setup: error: %s\n' "$*" >&2
  exit 1
}

# Runs a command with its output captured; shows the output only when it fails.
quiet() {
  local out
  out="$(mktemp)"
  if ! "$@" >"$out" 2>&1; then
    cat "$out" >&2
    rm -f "$out"
    return 1
  fi
  rm -f "$out"
}

as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    die "need root to run '$*' (run as root or install sudo)"
  fi
}

is_installed() {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

has_pip() { command -v python3 >/dev/null 2>&1 && python3 -m pip --version >/dev/null 2>&1; }

ptxas_works() { [ -x "$PTXAS" ] && "$PTXAS" --version >/dev/null 2>&1; }

# --- apt packages ------------------------------------------------------------------------
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  is_installed "$pkg" || missing+=("$pkg")
done
# pip is only needed to fetch ptxas.
if ! ptxas_works && ! has_pip; then
  missing+=(python3 python3-pip)
fi

if [ "${#missing[@]}" -gt 0 ]; then
  command -v apt-get >/dev/null 2>&1 || die "apt-get not found: install ${missing[*]} by hand"
  quiet as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq ||
    die "apt-get update failed"
  candidate="$(apt-cache policy "libmlir-${LLVM_VERSION}-dev" 2>/dev/null | awk '/Candidate:/ {print $2}')"
  if [ -z "$candidate" ] || [ "$candidate" = "(none)" ]; then
    die "no apt candidate for libmlir-${LLVM_VERSION}-dev; add an apt source carrying LLVM ${LLVM_VERSION} (e.g. https://apt.llvm.org, llvm-toolchain-bookworm-${LLVM_VERSION})"
  fi
  quiet as_root env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "${missing[@]}" ||
    die "apt-get install ${missing[*]} failed"
  for pkg in "${missing[@]}"; do
    log "installed $pkg (apt)"
  done
fi

# --- ptxas (PyPI nvidia-cuda-nvcc-cu12), project-local ----------------------------------
if ! ptxas_works; then
  has_pip || die "python3 -m pip is not available"
  tmp="$NVCC_DIR.tmp"
  rm -rf "$tmp"
  mkdir -p "$(dirname "$NVCC_DIR")"
  # --target installs outside any Python environment (no PEP 668 conflict, no root needed).
  quiet python3 -m pip install --quiet --disable-pip-version-check --no-deps \
    --target "$tmp" "$NVCC_PACKAGE" || die "pip install $NVCC_PACKAGE failed"
  rm -rf "$NVCC_DIR"
  mv "$tmp" "$NVCC_DIR"
  chmod +x "$PTXAS" 2>/dev/null || true
  ptxas_works || die "ptxas was installed at $PTXAS but does not run"
  log "installed ptxas ($("$PTXAS" --version | awk '/release/ {print $NF}')) at ${PTXAS#"$ROOT/"}"
fi

# --- rustfmt and clippy -----------------------------------------------------------------
for component in rustfmt clippy; do
  sub="fmt"
  [ "$component" = clippy ] && sub="clippy"
  if ! cargo "$sub" --version >/dev/null 2>&1; then
    if command -v rustup >/dev/null 2>&1; then
      quiet rustup component add "$component" || die "rustup component add $component failed"
      log "installed $component (rustup)"
    else
      die "cargo $sub is missing and rustup is not available to install $component"
    fi
  fi
done

# --- cargo-nextest (optional: scripts/test.sh falls back to cargo test) ------------------
# A failed install is remembered in .tools/nextest-unavailable (delete it to retry), so later
# runs stay quick and quiet.
NEXTEST_MARK="$ROOT/.tools/nextest-unavailable"
if [ "${DSC_SKIP_NEXTEST:-0}" != 1 ] && [ ! -e "$NEXTEST_MARK" ] &&
  ! cargo nextest --version >/dev/null 2>&1; then
  if command -v cargo-binstall >/dev/null 2>&1 &&
    quiet cargo binstall --no-confirm cargo-nextest; then
    log "installed cargo-nextest (cargo binstall)"
  elif quiet cargo install --locked cargo-nextest; then
    log "installed cargo-nextest (cargo install)"
  else
    mkdir -p "$(dirname "$NEXTEST_MARK")"
    touch "$NEXTEST_MARK"
    log "could not install cargo-nextest; tests will run with cargo test"
  fi
fi
