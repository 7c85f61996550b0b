#!/usr/bin/env bash
# Rebuilds bench/peers/deepgemm/: DeepGEMM's SM90 FP8 GEMM (sm90_fp8_gemm_1d2d_impl) specialized, as
# DeepGEMM's own JIT would, for the shapes of DeepGEMM's published H800 table, and compiled to PTX
# (compute_90a) with NVRTC 12.9 on a machine without a GPU. See bench/peers/deepgemm/README.md.
#
# usage: scripts/deepgemm-specialize.sh <DeepGEMM git repo> <CUTLASS git repo> [out_dir]
#   Both repositories may be bare or have a work tree; they must contain the commits pinned below
#   (fetching them is not done here). out_dir defaults to bench/peers/deepgemm.
# Installs (once, pinned, with pip --target) into the git-ignored .tools/:
#   .tools/nvrtc       nvidia-cuda-nvrtc-cu12, nvidia-cuda-runtime-cu12, nvidia-cuda-cccl-cu12
#   .tools/cuda-nvcc   nvidia-cuda-nvcc-cu12 (ptxas, crt/host_defines.h), as scripts/setup.sh does
# Work files (the include tree, per-shape logs) go to .tools/deepgemm-work.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DG_COMMIT=54e22612409371d6364144b69086735beb54e98b       # DeepGEMM "Multiple updates and refactorings (#364)"
CUTLASS_COMMIT=f3fde58372d33e9a5650ba7b80fc48b3b49d40c8  # DeepGEMM's third-party/cutlass pin at DG_COMMIT
NUM_SMS=132                                              # H800 / H100 SXM; the grid must equal this
PIP_PACKAGES=(nvidia-cuda-nvrtc-cu12==12.9.86 nvidia-cuda-runtime-cu12==12.9.79 nvidia-cuda-cccl-cu12==12.9.27)
NVCC_PACKAGE=nvidia-cuda-nvcc-cu12==12.9.86

# kind M N K groups   (M = total rows; for m-grouped contiguous M = groups x M-per-group)
SHAPES=(
  "normal 4096 7168 16384 1"
  "normal 4096 4096 7168 1"
  "normal 4096 2112 7168 1"
  "normal 128 7168 16384 1"
  "normal 64 2112 7168 1"
  "mgrouped_contig 32768 4096 7168 4"
  "mgrouped_contig 32768 7168 2048 4"
  "mgrouped_contig 32768 4096 7168 8"
  "mgrouped_contig 32768 7168 2048 8"
)

die() { printf 'deepgemm-specialize: error: %s\n' "$*" >&2; exit 1; }
log() { printf 'deepgemm-specialize: %s\n' "$*" >&2; }

[ $# -ge 2 ] || die "usage: $0 <DeepGEMM git repo> <CUTLASS git repo> [out_dir]"
DG_REPO=$1
CUTLASS_REPO=$2
OUT=${3:-$ROOT/bench/peers/deepgemm}
TOOLS="$ROOT/bench/peers/deepgemm/tools"
T="$ROOT/.tools"
WORK="$T/deepgemm-work"
NVRTC_DIR="$T/nvrtc"
NVCC_DIR="$T/cuda-nvcc"
PTXAS="$NVCC_DIR/nvidia/cuda_nvcc/bin/ptxas"

for r in "$DG_REPO:$DG_COMMIT" "$CUTLASS_REPO:$CUTLASS_COMMIT"; do
  git -c gc.auto=0 -C "${r%%:*}" cat-file -e "${r#*:}^{commit}" 2>/dev/null || die "${r%%:*} lacks commit ${r#*:}"
done
pin=$(git -c gc.auto=0 -c maintenance.auto=false -C "$DG_REPO" ls-tree "$DG_COMMIT" third-party/cutlass | awk '{print $3}')
[ "$pin" = "$CUTLASS_COMMIT" ] || die "DeepGEMM $DG_COMMIT pins CUTLASS $pin, not $CUTLASS_COMMIT"

# 1. Include tree as DeepGEMM's setup.py (prepare_includes) / develop.sh lays it out:
#    include/deep_gemm from DeepGEMM's deep_gemm/include, include/{cute,cutlass} from CUTLASS's include/.
rm -rf "$WORK"
mkdir -p "$WORK/include" "$WORK/logs"
git -c gc.auto=0 -c maintenance.auto=false -C "$DG_REPO" archive "$DG_COMMIT" deep_gemm/include/deep_gemm | tar -x -C "$WORK/include" --strip-components=2
git -c gc.auto=0 -c maintenance.auto=false -C "$CUTLASS_REPO" archive "$CUTLASS_COMMIT" include/cute include/cutlass | tar -x -C "$WORK/include" --strip-components=1
[ -f "$WORK/include/deep_gemm/impls/sm90_fp8_gemm_1d2d.cuh" ] || die "include tree lacks deep_gemm/impls/sm90_fp8_gemm_1d2d.cuh"
# (A snapshot whose large media blobs are absent makes `git archive` print "invalid object" for a path
# outside the archived folders and still succeed; check that every file of those folders arrived.)
want=$(( $(git -c gc.auto=0 -C "$DG_REPO" ls-tree -r --name-only "$DG_COMMIT" deep_gemm/include/deep_gemm | wc -l) \
       + $(git -c gc.auto=0 -C "$CUTLASS_REPO" ls-tree -r --name-only "$CUTLASS_COMMIT" include/cute include/cutlass | wc -l) ))
got=$(find "$WORK/include" -type f | wc -l)
[ "$want" = "$got" ] || die "include tree has $got files, expected $want"
git -c gc.auto=0 -c maintenance.auto=false -C "$DG_REPO" show "$DG_COMMIT:LICENSE" > "$WORK/LICENSE-DeepGEMM"

# 2. NVRTC, CUDA runtime headers, CCCL and ptxas (pinned wheels, project-local).
if [ ! -f "$NVRTC_DIR/nvidia/cuda_nvrtc/lib/libnvrtc.so.12" ] || [ ! -d "$NVRTC_DIR/nvidia/cuda_cccl/include" ] \
   || [ ! -d "$NVRTC_DIR/nvidia/cuda_runtime/include" ]; then
  log "pip install --target $NVRTC_DIR ${PIP_PACKAGES[*]}"
  python3 -m pip install --quiet --no-deps --target "$NVRTC_DIR" "${PIP_PACKAGES[@]}"
fi
if [ ! -x "$PTXAS" ]; then
  log "pip install --target $NVCC_DIR $NVCC_PACKAGE"
  python3 -m pip install --quiet --no-deps --target "$NVCC_DIR" "$NVCC_PACKAGE"
fi
export NVRTC_LIB="$NVRTC_DIR/nvidia/cuda_nvrtc/lib/libnvrtc.so.12"
export LD_LIBRARY_PATH="$NVRTC_DIR/nvidia/cuda_nvrtc/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export DG_INCLUDE="$WORK/include"
export CUDA_INCLUDE="$NVRTC_DIR/nvidia/cuda_runtime/include"
export CCCL_INCLUDE="$NVRTC_DIR/nvidia/cuda_cccl/include"
export NVCC_INCLUDE="$NVCC_DIR/nvidia/cuda_nvcc/include"
"$PTXAS" --version | grep -q 'V12\.9\.86' || die "$PTXAS is not ptxas 12.9.86"

# 3. One specialization per shape: heuristic -> kernel.cu -> NVRTC -> PTX; check with ptxas.
mkdir -p "$OUT"
cp "$WORK/LICENSE-DeepGEMM" "$OUT/LICENSE-DeepGEMM"
declare -A SEEN=()
SUMMARY="$WORK/summary.tsv"
printf 'name\tblock_m\tblock_n\tblock_k\tstages\tcluster_m\tcluster_n\tmulticast_on\tsmem\tregs\tspill_stores\tspill_loads\tsame_ptx_as\n' > "$SUMMARY"
for s in "${SHAPES[@]}"; do
  read -r kind m n k g <<< "$s"
  if [ "$kind" = normal ]; then
    name="normal_m${m}_n${n}_k${k}"; gemm_type=Normal
    python3 "$TOOLS/heuristic.py" normal "$m" "$n" "$k" "$NUM_SMS" > "$OUT/$name.config.json"
  else
    name="${kind}_m${m}_n${n}_k${k}_g${g}"; gemm_type=MGroupedContiguous
    python3 "$TOOLS/heuristic.py" mgrouped_contig "$m" "$n" "$k" "$g" "$NUM_SMS" > "$OUT/$name.config.json"
  fi
  # compiled_dims "nk" (DeepGEMM's default for fp8_gemm_nt and m_grouped_..._nt_contiguous): SHAPE_M = 0.
  python3 "$TOOLS/gen_cu.py" "$OUT/$name.config.json" 0 "$n" "$k" "$g" "$gemm_type" > "$OUT/$name.cu"
  # --frandom-seed=0 is the one flag DeepGEMM's JIT does not pass: without it NVRTC names internal-linkage
  # symbols _INTERNAL_00000000_9_kernel_cu_<random hash>_<pid> (only ~60 unused .global constants), so
  # every run's PTX differs in those names; with it the output is byte-for-byte reproducible. The code
  # is otherwise identical.
  log "$name: NVRTC"
  python3 "$TOOLS/nvrtc_compile.py" "$OUT/$name.cu" "$OUT/$name.ptx" --frandom-seed=0 2> "$WORK/logs/$name.nvrtc.log" \
    || { cat "$WORK/logs/$name.nvrtc.log" >&2; die "$name: NVRTC failed"; }
  grep -m1 -E '^(\.visible )?\.entry ' "$OUT/$name.ptx" | sed -E 's/^(\.visible )?\.entry ([A-Za-z0-9_$]+).*/\2/' > "$OUT/$name.entry.txt"
  [ -s "$OUT/$name.entry.txt" ] || die "$name: no .entry in the PTX"
  "$PTXAS" -arch=sm_90a -v "$OUT/$name.ptx" -o "$WORK/$name.cubin" > "$WORK/logs/$name.ptxas.log" 2>&1 \
    || { cat "$WORK/logs/$name.ptxas.log" >&2; die "$name: ptxas failed"; }
  python3 "$TOOLS/ptx_inventory.py" "$OUT/$name.ptx" > "$OUT/$name.inventory.txt"
  regs=$(grep -o 'Used [0-9]* registers' "$WORK/logs/$name.ptxas.log" | awk '{print $2}')
  sst=$(grep -o '[0-9]* bytes spill stores' "$WORK/logs/$name.ptxas.log" | awk '{print $1}')
  sld=$(grep -o '[0-9]* bytes spill loads' "$WORK/logs/$name.ptxas.log" | awk '{print $1}')
  # Shapes whose PTX is byte-identical to an earlier one keep only the first.
  cp "$OUT/$name.config.json" "$WORK/$name.config.json"
  sum=$(sha256sum < "$OUT/$name.ptx" | cut -d' ' -f1)
  same=-
  if [ -n "${SEEN[$sum]:-}" ]; then
    same=${SEEN[$sum]}
    log "$name: PTX identical to $same; keeping only $same"
    rm -f "$OUT/$name".{ptx,cu,config.json,entry.txt,inventory.txt}
  else
    SEEN[$sum]=$name
  fi
  python3 -c '
import json, sys
c = json.load(open(sys.argv[1]))
print("\t".join(map(str, [sys.argv[2], c["block_m"], c["block_n"], c["block_k"], c["num_stages"],
      c["cluster_m"], c["cluster_n"], ("none" if c["num_tma_multicast"] == 1 else "A" if c["is_tma_multicast_on_a"] else "B"),
      c["smem_size"]] + sys.argv[3:7])))' "$WORK/$name.config.json" "$name" "$regs" "$sst" "$sld" "$same" >> "$SUMMARY"
done
column -t -s $'\t' "$SUMMARY"
