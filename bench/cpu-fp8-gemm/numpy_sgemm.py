"""numpy (OpenBLAS) sgemm at the shapes of kernels/benches/block_gemm.rs: y = x[m,k] @ w[n,k].T in f32.

Usage: python numpy_sgemm.py [SHAPE ...]   (SHAPE: MxNxK or wgrad:MxNxK, the same f32 GEMM)
Each shape prints `shape <shape> numpy_ms <median> numpy_gflops <median>`: the median of RUNS
(environment, default 7) timed calls after one warm-up call.
"""

import os
import sys
import time

import numpy as np

DEFAULT_SHAPES = [
    "2048x2048x2048",
    "4096x2048x512",
    "1024x2048x2048",
    "256x2048x2048",
    "2048x256x256",
    "wgrad:2048x512x4096",
    "wgrad:512x128x2048",
]


def main():
    runs = max(1, int(os.environ.get("RUNS", "7")))
    shapes = sys.argv[1:] or DEFAULT_SHAPES
    try:
        from threadpoolctl import threadpool_info

        info = [(i["internal_api"], i["version"], i["num_threads"], i.get("architecture")) for i in threadpool_info()]
    except ImportError:
        info = "threadpoolctl not installed"
    print(f"# numpy {np.__version__} sgemm, BLAS {info}, median of {runs}")
    rng = np.random.default_rng(0)
    for shape in shapes:
        m, n, k = (int(v) for v in shape.removeprefix("wgrad:").split("x"))
        x = rng.uniform(-1, 1, (m, k)).astype(np.float32)
        w = rng.uniform(-1, 1, (n, k)).astype(np.float32)
        x @ w.T
        times = []
        for _ in range(runs):
            t = time.perf_counter()
            x @ w.T
            times.append(time.perf_counter() - t)
        med = sorted(times)[runs // 2]
        print(f"shape {shape} numpy_ms {med * 1e3:.3f} numpy_gflops {2 * m * n * k / med / 1e9:.1f}")


if __name__ == "__main__":
    main()
