"""Why a second busy process slows training far more than 2x, and what --threads does about it.

    python benchmarks/threads.py

One UNet training step (base 16, batch 8, 3x96x128, 32 classes: the CamVid example's) is timed with
BLAS limited to 1 or 2 threads (threadpoolctl, as ``minseg train --threads``), alone and beside a
competitor this script starts and stops itself: a pure-Python spin loop (one busy core) or a NumPy
matrix-product loop (another BLAS-heavy process, like a second training run). A float32 GEMM of the
step's typical shape is timed the same way. Prints the median of several runs after warm-up, in ms.
"""
import subprocess
import sys
import time

import numpy as np
from _common import median_ms
from threadpoolctl import threadpool_info, threadpool_limits

import minseg
import minseg.functional as F
from minseg.models import create
from minseg.optim import AdamW

COMPETITORS = {
    "none": None,
    "spin (1 core)": "while True: pass",
    "numpy GEMMs (2 threads)": ("import numpy as np\na = np.ones((1024, 1024), np.float32)\n"
                                "while True: a @ a"),
}


def step_timer():
    minseg.manual_seed(0)
    model = create("unet", 32, base=16)
    optimizer = AdamW(model.parameters(), lr=1e-3)
    rng = np.random.default_rng(0)
    images = minseg.Tensor(rng.standard_normal((8, 3, 96, 128)).astype(np.float32))
    targets = minseg.Tensor(rng.integers(0, 32, size=(8, 96, 128)))

    def step():
        loss = F.cross_entropy(model(images), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return step


def gemm_timer():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((12288, 144)).astype(np.float32)  # im2col rows of a 16-channel 3x3 conv, batch 8
    b = rng.standard_normal((144, 16)).astype(np.float32)
    return lambda: a @ b


def measure(competitor, threads, step, gemm):
    def twenty_gemms():
        return [gemm() for _ in range(20)]

    process = None if competitor is None else subprocess.Popen([sys.executable, "-c", competitor])
    try:
        time.sleep(0.5)  # let the competitor start spinning
        with threadpool_limits(limits=threads):
            return median_ms(step, runs=5, warmup=2), median_ms(twenty_gemms, runs=5, warmup=2) / 20
    finally:
        if process is not None:
            process.kill()
            process.wait()


def main():
    blas = [(info["internal_api"], info.get("version"), info["num_threads"]) for info in threadpool_info()]
    print(f"BLAS pools: {blas}; cores: {len(__import__('os').sched_getaffinity(0))}")
    step, gemm = step_timer(), gemm_timer()
    print(f"{'competitor':<26}{'threads':>8}{'UNet step ms':>14}{'GEMM ms':>10}")
    for name, code in COMPETITORS.items():
        for threads in (2, 1):
            step_ms, gemm_ms = measure(code, threads, step, gemm)
            print(f"{name:<26}{threads:>8}{step_ms:>14.0f}{gemm_ms:>10.3f}", flush=True)


if __name__ == "__main__":
    main()
