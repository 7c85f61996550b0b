#!/usr/bin/env python3
"""Generate emulator validation fixtures from MLIR upstream GPU integration tests.

Inputs: the device side (+ gpu.launch) of each upstream test, transcribed/adapted into
$UPSTREAM_SRC (default /tmp/up/<name>.mlir; those sources are not committed, see
emulator/tests/upstream/README.md for provenance).  Each is lowered with the distro's mlir-opt-22:

  mlir-opt-22 <name>.mlir [pre-passes] -gpu-launch-sink-index-computations \
     -gpu-lower-to-nvvm-pipeline="cubin-chip=<chip> cubin-features=<feat> opt-level=3 cubin-format=isa"

and the PTX is the `assembly` string of the resulting #gpu.object.  The PTX is checked with ptxas.
Outputs (emulator/tests/upstream/): <name>.ptx, <name>.json, <name>.*.bin, INSTRUCTIONS.md.

Usage: PYTHONPATH=/tmp/pylib python3 scripts/gen_upstream_fixtures.py [--no-lower]
"""
import json, os, re, subprocess, sys
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "emulator", "tests", "upstream")
SRC = os.environ.get("UPSTREAM_SRC", "/tmp/up")
MLIR_OPT = os.environ.get("MLIR_OPT", "mlir-opt-22")
PTXAS = os.path.join(ROOT, ".tools/cuda-nvcc/nvidia/cuda_nvcc/bin/ptxas")
UP = "mlir/test/Integration/GPU/CUDA/"


def lower(name, chip, feat, pre=()):
    src = os.path.join(SRC, name + ".mlir")
    cmd = [MLIR_OPT, src, *pre, "-gpu-launch-sink-index-computations",
           f"-gpu-lower-to-nvvm-pipeline=cubin-chip={chip} cubin-features={feat} opt-level=3 cubin-format=isa"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{name}: mlir-opt failed:\n{r.stderr}")
    m = re.search(r'assembly = "((?:[^"\\]|\\.)*)"', r.stdout)
    s = m.group(1).replace("\\\\", "\x00")
    s = re.sub(r"\\([0-9A-Fa-f]{2})", lambda x: chr(int(x.group(1), 16), ), s).replace("\x00", "\\")
    path = os.path.join(OUT, name + ".ptx")
    open(path, "w").write(s)
    arch = chip
    r = subprocess.run([PTXAS, f"-arch={arch}", "-v", path, "-o", "/dev/null"], capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{name}: ptxas failed:\n{r.stderr}")
    return r.stderr


def instructions(ptx_path):
    ops = {}
    for line in open(ptx_path):
        line = line.split("//")[0].strip()
        if not line or line[0] in ".{}$)" or line.endswith(":") or line.startswith("("):
            continue
        line = re.sub(r"^@!?%?\w+\s+", "", line)
        tok = line.split()[0].rstrip(";")
        if not re.match(r"^[a-z]", tok):
            continue
        ops[tok] = ops.get(tok, 0) + 1
    return dict(sorted(ops.items()))


def memref(buf, shape, strides=None, offset=0):
    """Params of a memref under MLIR's default (non-bare) calling convention."""
    if strides is None:
        strides, acc = [], 1
        for d in reversed(shape):
            strides.insert(0, acc)
            acc *= d
    return ([{"ptr": buf, "note": "allocated ptr"}, {"ptr": buf, "note": "aligned ptr"}, {"u64": offset}]
            + [{"u64": d} for d in shape] + [{"u64": s} for s in strides])


def tmap(buf, dtype, dims, strides_bytes, box, swizzle):
    return {"tensor_map_ptr": {"buffer": buf, "dtype": dtype, "dims": dims, "strides_bytes": strides_bytes,
                               "box": box, "element_strides": [1] * len(dims), "swizzle": swizzle,
                               "interleave": "none", "l2_promotion": "none", "oob_fill": "none"}}


def save(name, tag, arr):
    fn = f"{name}.{tag}.bin"
    arr = np.ascontiguousarray(arr)
    open(os.path.join(OUT, fn), "wb").write(arr.astype(arr.dtype.newbyteorder("<")).tobytes())
    return {"kind": "file", "path": fn}


def fx_shuffle():
    n = "shuffle"
    exp = np.array([4, 5, 6, 7, 0, 1, 2, 3, 12, -1, -1, -1, 8], np.float32)
    return n, "sm_90a", "+ptx80", (), {
        "source": UP + "shuffle.mlir", "entry": "main_kernel",
        "grid": [1, 1, 1], "block": [13, 1, 1], "cluster": [1, 1, 1], "dynamic_shared_bytes": 0,
        "buffers": {"dst": {"dtype": "f32", "shape": [13], "init": {"kind": "zeros"}}},
        "params": memref("dst", [13]),
        "expect": {"buffer": "dst", "kind": "exact", "values": exp.tolist(), "file": save(n, "dst.expect", exp)["path"]},
        "notes": "gpu.shuffle xor 4 with width = blockDim.x = 13 (shfl.sync.bfly with clamp from width); lane i writes "
                 "float(i^4) if i^4 < 13 else -1.0. CHECK: [4, 5, 6, 7, 0, 1, 2, 3, 12, -1, -1, -1, 8]."}


def fx_all_reduce():
    n = "all_reduce_op"
    exp = np.full((2, 4, 13), 5356.0, np.float32)
    return n, "sm_90a", "+ptx80", (), {
        "source": UP + "all-reduce-op.mlir", "entry": "main_kernel",
        "grid": [1, 1, 1], "block": [13, 4, 2], "cluster": [1, 1, 1], "dynamic_shared_bytes": 0,
        "buffers": {"dst": {"dtype": "f32", "shape": [2, 4, 13], "init": {"kind": "zeros"}}},
        "params": memref("dst", [2, 4, 13]),
        "expect": {"buffer": "dst", "kind": "exact", "fill": 5356.0, "file": save(n, "dst.expect", exp)["path"]},
        "notes": "gpu.all_reduce add over the 104 threads of a 13x4x2 block of float(linear thread id): sum 0..103 = 5356 "
                 "stored at dst[tz][ty][tx]. Partial warps (104 = 3*32+8) exercise the shfl.sync member mask path. "
                 "CHECK-COUNT-8: [5356 x13]. All partial sums are integers < 2^24, so f32 adds are exact."}


def fx_wmma():
    n = "wmma_matmul_f16"
    a = np.tile(np.arange(16, dtype=np.float16), (16, 1))
    i = np.arange(16)
    exp = (16 * np.outer(i, i)).astype(np.float16)
    return n, "sm_80", "+ptx70", (), {
        "source": UP + "TensorCore/wmma-matmul-f16.mlir", "entry": "main_kernel",
        "grid": [1, 1, 1], "block": [32, 1, 1], "cluster": [1, 1, 1], "dynamic_shared_bytes": 0,
        "buffers": {"a": {"dtype": "f16", "shape": [16, 16], "init": save(n, "a", a), "formula": "a[r][c] = c"},
                    "c": {"dtype": "f16", "shape": [16, 16], "init": {"kind": "zeros"}}},
        "params": memref("a", [16, 16]) + memref("c", [16, 16]),
        "expect": {"buffer": "a", "kind": "exact", "dtype": "f16", "file": save(n, "a.expect", exp)["path"],
                   "formula": "a[i][j] = 16*i*j"},
        "notes": "One warp: A = wmma.load.a col-major from buffer a (so A[i][k] = a[k][i] = i), B = wmma.load.b row from a "
                 "(B[k][j] = j), C = 0 (f16); D = A*B (f16 accumulate) stored row-major back into a. "
                 "CHECK rows: a[i][j] = 16*i*j (all exact in f16). Original RUN used cubin-chip=sm_70; lowered here for sm_80."}


def fx_mma_sync():
    n = "mma_sync_f16_f16_accum"
    lhs = (np.arange(256, dtype=np.float32).reshape(16, 16) / 64).astype(np.float16)
    rhs = (np.arange(128, dtype=np.float32).reshape(16, 8) / 64).astype(np.float16)
    res = (np.arange(128, dtype=np.float32).reshape(16, 8) / 64).astype(np.float16)
    check = [
        [2.42188, 2.4668, 2.51172, 2.55664, 2.60156, 2.64648, 2.69141, 2.73633],
        [6.29688, 6.40625, 6.51172, 6.61719, 6.72656, 6.83594, 6.94141, 7.04688],
        [10.1719, 10.3438, 10.5156, 10.6797, 10.8516, 11.0234, 11.1875, 11.3594],
        [14.0469, 14.2812, 14.5156, 14.7422, 14.9766, 15.2109, 15.4375, 15.6719],
        [17.9219, 18.2188, 18.5156, 18.8125, 19.0938, 19.3906, 19.6875, 19.9844],
        [21.7969, 22.1562, 22.5156, 22.875, 23.2188, 23.5781, 23.9375, 24.2969],
        [25.6719, 26.0938, 26.5156, 26.9375, 27.3438, 27.7656, 28.1875, 28.6094],
        [29.5469, 30.0312, 30.5156, 31, 31.4688, 31.9531, 32.4375, 32.9375],
        [33.4375, 33.9688, 34.5, 35.0625, 35.5938, 36.1562, 36.6875, 37.25],
        [37.3125, 37.9062, 38.5, 39.125, 39.7188, 40.3438, 40.9375, 41.5625],
        [41.1875, 41.8438, 42.5, 43.1875, 43.8438, 44.5312, 45.1875, 45.875],
        [45.0625, 45.7812, 46.5, 47.25, 47.9688, 48.7188, 49.4375, 50.1875],
        [48.9375, 49.7188, 50.5, 51.3125, 52.0938, 52.9062, 53.6875, 54.5],
        [52.8125, 53.6562, 54.5, 55.375, 56.2188, 57.0938, 57.9375, 58.8125],
        [56.6875, 57.5938, 58.5, 59.4375, 60.3438, 61.2812, 62.1875, 63.125],
        [60.5625, 61.5312, 62.5, 63.5, 64.5, 65.4375, 66.4375, 67.4375]]
    exp = np.array(check, np.float32).astype(np.float16)   # printed with 6 significant digits -> nearest f16 is exact
    ref64 = lhs.astype(np.float64) @ rhs.astype(np.float64) + res.astype(np.float64)
    diff_ulps = np.abs(exp.astype(np.float64) - ref64) / np.spacing(exp.astype(np.float16)).astype(np.float64)
    return n, "sm_80", "+ptx76", ("-transform-interpreter", "-test-transform-dialect-erase-schedule"), {
        "source": UP + "TensorCore/sm80/transform-mma-sync-matmul-f16-f16-accum.mlir", "entry": "main_kernel",
        "grid": [1, 1, 1], "block": [32, 1, 1], "cluster": [1, 1, 1], "dynamic_shared_bytes": 0,
        "buffers": {
            "lhs": {"dtype": "f16", "shape": [16, 16], "init": save(n, "lhs", lhs), "formula": "f16(r*16+c)/64"},
            "rhs": {"dtype": "f16", "shape": [16, 8], "init": save(n, "rhs", rhs), "formula": "f16(r*8+c)/64"},
            "res": {"dtype": "f16", "shape": [16, 8], "init": save(n, "res", res), "formula": "f16(r*8+c)/64"}},
        "params": memref("lhs", [16, 16]) + memref("rhs", [16, 8]) + memref("res", [16, 8]),
        "expect": {"buffer": "res", "kind": "check_values", "dtype": "f16", "values": check,
                   "file": save(n, "res.expect", exp)["path"],
                   "compare": "exact f16 bits of the file (= CHECK values rounded to nearest f16). All 128 CHECK values equal the "
                              "f64 reference rounded once to f16 (max 0.5 ulp), i.e. the hardware result was correctly rounded here",
                   "reference_f64_file": save(n, "res.ref_f64", ref64)["path"],
                   "max_ulps_check_vs_f64": float(diff_ulps.max())},
        "notes": "res(16x8,f16) += lhs(16x16,f16) @ rhs(16x8,f16) by one mma.sync.m16n8k16 row.col f16.f16.f16.f16 (f16 "
                 "accumulator, so result rounding is observable). Operands are loaded per-thread with ld.global.b16 "
                 "(no ldmatrix in this lowering). CHECK values upstream say were 'verified against other f16 CUDA "
                 "implementations' (hardware)."}


def swz128(nrows, row_bytes=128):
    """Byte permutation of the 128B swizzle: logical byte L of the box lands at L ^ (((L >> 7) & 7) << 4)."""
    L = np.arange(nrows * row_bytes)
    return L ^ (((L >> 7) & 7) << 4)


def fx_tma_noswizzle():
    n = "tma_load_64x8_8x128_noswizzle"
    lhs = np.tile(np.arange(8, dtype=np.float32), (64, 1))
    rhs = np.full((8, 128), 3.0, np.float32)
    assert lhs[45][7] == 7.0 and rhs[7][0] == 3.0
    return n, "sm_90a", "+ptx80", (), {
        "source": UP + "sm90/tma_load_64x8_8x128_noswizzle.mlir", "adapted": True, "entry": "main_kernel",
        "grid": [1, 1, 1], "block": [128, 1, 1], "cluster": [1, 1, 1], "dynamic_shared_bytes": 0,
        "buffers": {
            "lhs": {"dtype": "f32", "shape": [64, 8], "init": save(n, "lhs", lhs), "formula": "lhs[r][c] = c"},
            "rhs": {"dtype": "f32", "shape": [8, 128], "init": save(n, "rhs", rhs), "formula": "3.0"},
            "outL": {"dtype": "f32", "shape": [64, 8], "init": {"kind": "zeros"}},
            "outR": {"dtype": "f32", "shape": [8, 128], "init": {"kind": "zeros"}}},
        "params": [tmap("lhs", "float32", [8, 64], [32], [8, 64], "none"),
                   tmap("rhs", "float32", [128, 8], [512], [128, 8], "none")]
                  + memref("outL", [64, 8]) + memref("outR", [8, 128]),
        "expect": [{"buffer": "outL", "kind": "exact", "file": save(n, "outL.expect", lhs)["path"]},
                   {"buffer": "outR", "kind": "exact", "file": save(n, "outR.expect", rhs)["path"]}],
        "notes": "mbarrier initialised with count blockDim.x=128; thread 0 does arrive.expect_tx(6144 bytes) then two 2-D "
                 "TMA loads (64x8 f32 and 8x128 f32 boxes at (0,0)); the other 127 threads arrive with tx 0; all wait "
                 "with try_wait.parity 0. Upstream printf'd lhs[45][7]=7.0 and rhs[7][0]=3.0 (CHECK lines); this "
                 "adaptation copies both whole shared tiles to outL/outR instead, so outL == lhs and outR == rhs. "
                 "Tensor maps as mgpuTensorMapEncodeTiledMemref builds them from box[64,8] / box[8,128] "
                 "(dims/box innermost first); the kernel receives a .u64 pointer to a 128-byte CUtensorMap in global memory."}


def fx_tma_swizzle():
    n = "tma_load_128x64_swizzle128b"
    g = (np.arange(128 * 64).reshape(128, 64) // 8).astype(np.float16)
    raw = g.reshape(-1).view(np.uint8)
    out = np.empty_like(raw)
    out[swz128(128)] = raw
    out = out.view(np.float16).reshape(128, 64)
    # cross-check with the first CHECK rows of the upstream test (shared tile printed row-major)
    assert out[0, :64:8].tolist() == [0, 1, 2, 3, 4, 5, 6, 7]
    assert out[1, :64:8].tolist() == [9, 8, 11, 10, 13, 12, 15, 14]
    assert out[7, :64:8].tolist() == [63, 62, 61, 60, 59, 58, 57, 56]
    assert out[8, :64:8].tolist() == [64, 65, 66, 67, 68, 69, 70, 71]
    assert out[23, :64:8].tolist() == [191, 190, 189, 188, 187, 186, 185, 184]
    return n, "sm_90a", "+ptx80", (), {
        "source": UP + "sm90/tma_load_128x64_swizzle128b.mlir", "adapted": True, "entry": "main_kernel",
        "grid": [1, 1, 1], "block": [128, 1, 1], "cluster": [1, 1, 1], "dynamic_shared_bytes": 0,
        "buffers": {
            "a": {"dtype": "f16", "shape": [128, 64], "init": save(n, "a", g), "formula": "f16((r*64 + c) / 8)  (integer division)"},
            "out": {"dtype": "f16", "shape": [128, 64], "init": {"kind": "zeros"}}},
        "params": [tmap("a", "float16", [64, 128], [128], [64, 128], "128B")] + memref("out", [128, 64]),
        "expect": {"buffer": "out", "kind": "exact", "file": save(n, "out.expect", out)["path"],
                   "formula": "byte L of the row-major 128x64 f16 box lands at shared byte L ^ (((L>>7)&7)<<4)"},
        "notes": "Thread 0 issues one 2-D TMA load of the 128x64 f16 box with SWIZZLE_128B into a 1024-aligned shared "
                 "tile, then arrive.expect_tx(8192); others arrive with tx 0; mbarrier count = 128. Upstream printf'd the "
                 "shared tile row-major (CHECK lines show the swizzled order: row 1 = 9,8,11,10,... in 8-element "
                 "16-byte chunks); this adaptation copies the shared tile row-major to `out`, so `out` must equal those "
                 "CHECK rows (the generator asserts rows 0,1,7,8,23 against them)."}


def fx_gemm():
    n = "gemm_f32_f16_f16_128x128x128"
    r = np.arange(128)[:, None]; c = np.arange(128)[None, :]
    A = (((r * 64 + c) // 8) % 16).astype(np.float16)
    B = (((r * 128 + c) // 8) % 16).astype(np.float16)
    D = (A.astype(np.float64) @ B.astype(np.float64)).astype(np.float32)
    assert D.max() < 2 ** 24
    return n, "sm_90a", "+ptx80", (), {
        "source": UP + "sm90/gemm_f32_f16_f16_128x128x128.mlir", "adapted": True, "entry": "main_kernel",
        "grid": [1, 1, 1], "block": [128, 1, 1], "cluster": [1, 1, 1], "dynamic_shared_bytes": 65536,
        "buffers": {
            "a": {"dtype": "f16", "shape": [128, 128], "init": save(n, "a", A), "formula": "f16(((r*64 + c) / 8) % 16)  (integer ops)"},
            "b": {"dtype": "f16", "shape": [128, 128], "init": save(n, "b", B), "formula": "f16(((r*128 + c) / 8) % 16)  (integer ops)"},
            "d": {"dtype": "f32", "shape": [128, 128], "init": {"kind": "zeros"}}},
        "params": memref("d", [128, 128]) + [
            tmap("a", "float16", [128, 128], [256], [64, 128], "128B"),
            tmap("b", "float16", [128, 128], [256], [64, 64], "128B")],
        "expect": {"buffer": "d", "kind": "exact", "file": save(n, "d.expect", D)["path"],
                   "tolerance_abs": 1e-8,
                   "formula": "d = a @ b (128x128x128), computed in f64; all values are integers <= 28800, exact in f32"},
        "notes": "One warpgroup (128 threads), 64 KiB dynamic shared memory, 2 mbarriers, 2 pipeline stages (K=64 each). "
                 "Thread 0 arms each stage's mbarrier with expect_tx(32768) and issues 3 TMA loads per stage: "
                 "A box 64(k) x 128(m) at (x=stage*64, y=0) and two B boxes 64(n) x 64(k) at (x=0|64, y=stage*64), "
                 "all SWIZZLE_128B. The loop waits on mbarrier[stage] parity 0 and issues 8 "
                 "wgmma.mma_async.m64n128k16.f32.f16.f16 per stage (B transposed, i.e. MN-major), then the accumulator "
                 "fragments are stored to shared memory (accShmem, aliasing the same dynamic region) and copied to d "
                 "with 16-byte vector accesses. Upstream CHECK: 'Correct Results : 16384', 'Incorrect Results : 0' with "
                 "|ref - d| <= 1e-8 where ref = linalg.matmul on the host. ADAPTATION: upstream declares its "
                 "zero-sized shared globals 'private' and uses gpu.dynamic_shared_memory; LLVM 22 then demotes each to "
                 "a 1-byte *static* .shared variable, so the TMA tiles would overlap the mbarriers. Here they are public "
                 "(-> '.extern .shared .align 1024 .b8 x[]', all aliasing the start of dynamic shared memory, which is "
                 "what upstream intends) and aligned to 1024 as SWIZZLE_128B requires. "
                 "Tensor maps: host creates them with nvgpu.tma.create.descriptor box[128,64] (A) and box[64,64] (B) "
                 "over the whole 128x128 f16 matrices; the kernel gets .u64 pointers to 128-byte maps in global memory."}


def fx_mma_sync_tf32():
    n = "mma_sync_tf32"
    lhs = np.arange(64, dtype=np.float32).reshape(16, 4)
    rhs = np.arange(32, dtype=np.float32).reshape(4, 8)
    res = np.arange(128, dtype=np.float32).reshape(16, 8)
    exp = (lhs.astype(np.float64) @ rhs.astype(np.float64) + res).astype(np.float32)
    assert exp[0].tolist() == [112, 119, 126, 133, 140, 147, 154, 161]
    assert exp[15].tolist() == [3112, 3359, 3606, 3853, 4100, 4347, 4594, 4841]
    return n, "sm_80", "+ptx76", ("-transform-interpreter", "-test-transform-dialect-erase-schedule"), {
        "source": UP + "TensorCore/sm80/transform-mma-sync-matmul-f32.mlir", "entry": "main_kernel",
        "grid": [1, 1, 1], "block": [32, 1, 1], "cluster": [1, 1, 1], "dynamic_shared_bytes": 0,
        "buffers": {
            "lhs": {"dtype": "f32", "shape": [16, 4], "init": save(n, "lhs", lhs), "formula": "r*4+c"},
            "rhs": {"dtype": "f32", "shape": [4, 8], "init": save(n, "rhs", rhs), "formula": "r*8+c"},
            "res": {"dtype": "f32", "shape": [16, 8], "init": save(n, "res", res), "formula": "r*8+c"}},
        "params": memref("lhs", [16, 4]) + memref("rhs", [4, 8]) + memref("res", [16, 8]),
        "expect": {"buffer": "res", "kind": "exact", "file": save(n, "res.expect", exp)["path"],
                   "formula": "res += lhs @ rhs; integers (< 2^11 per operand, sums < 2^24) so exact in tf32/f32; "
                              "CHECK rows 0 and 15 asserted by the generator"},
        "notes": "res(16x8,f32) += lhs(16x4) @ rhs(4x8) by one mma.sync.m16n8k4.row.col.f32.tf32.tf32.f32 "
                 "(transform.nvgpu.rewrite_matmul_as_mma_sync, tf32Enabled). Operands loaded per thread from global. "
                 "CHECK: [112, 119, ..., 161] ... [3112, ..., 4841]."}


FIXTURES = [fx_shuffle, fx_all_reduce, fx_wmma, fx_mma_sync, fx_mma_sync_tf32, fx_tma_noswizzle, fx_tma_swizzle, fx_gemm]


def main():
    os.makedirs(OUT, exist_ok=True)
    table = []
    for f in FIXTURES:
        name, chip, feat, pre, js = f()
        if "--no-lower" not in sys.argv:
            info = lower(name, chip, feat, pre)
        else:
            info = ""
        js = {"source": js.pop("source"), "target": chip, **js}
        js["lowering"] = (f"{MLIR_OPT} {' '.join(pre)} -gpu-launch-sink-index-computations "
                          f"-gpu-lower-to-nvvm-pipeline=\"cubin-chip={chip} cubin-features={feat} opt-level=3 cubin-format=isa\"").replace("  ", " ")
        js["ptxas"] = [l for l in info.splitlines() if "Used" in l or "C75" in l]
        ins = instructions(os.path.join(OUT, name + ".ptx"))
        js["instructions"] = sorted(ins)
        json.dump(js, open(os.path.join(OUT, name + ".json"), "w"), indent=1)
        table.append((name, js["source"], chip, ins))
    with open(os.path.join(OUT, "INSTRUCTIONS.md"), "w") as fh:
        fh.write("# PTX instructions used by each fixture (generated; opcode(count))\n\n")
        for name, src, chip, ins in table:
            fh.write(f"## {name} ({chip})\nsource: `{src}`\n\n")
            fh.write(", ".join(f"`{k}`({v})" for k, v in ins.items()) + "\n\n")
    print("\n".join(t[0] for t in table))


if __name__ == "__main__":
    main()
