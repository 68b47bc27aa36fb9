#!/usr/bin/env bash
# gpu_check.sh: every GPU check of minseg in one call on a bare machine with an NVIDIA GPU, fully logged.
#
#   benchmarks/gpu_check.sh [--out DIR] [--data DIR] [--wheels DIR] [--budget SECONDS] [--steps A,B] [--dry-run]
#   benchmarks/gpu_check.sh --prepare        # before the call, on a machine with the data: see docs/gpu.md
#
# Steps, in order, each under its own time limit (and never past --budget); a step that fails or runs out
# of time is logged and the next one runs:
#   env          nvidia-smi, Python, NumPy, CuPy, PyTorch and cuDNN versions, nvcc
#   cupy         minseg's two kernel files compile through CuPy and a kernel runs; when CuPy or its CUDA
#                headers are missing, the wheels in --wheels are installed (no network) and it is tried again
#   pytest       python -m pytest -m gpu (every GPU test)
#   nvrtc        registers and spills as ptxas reports them for CuPy's NVRTC options
#                (python -m tests.cuda_emulation.resources --arch sm_XY)
#   driver       the driver's attributes of the kernels as minseg loaded them (resources --loaded)
#   cubin        cuobjdump --dump-resource-usage of the kernels built by nvcc for this GPU
#   benchmark    python benchmarks/gpu.py, minseg beside PyTorch/cuDNN in the same process
#   phases       strided transposed convolutions: the stride-phase split, the implicit GEMM, PyTorch's
#   example-5    examples/camvid_tiny.py --device cuda --epochs 5 (its CPU numbers are in the summary)
#   example-100  the example's defaults (100 epochs), when the 5-epoch run's pace says it fits what is left
# --steps runs only the named groups: env, cupy, pytest, resources (nvrtc, driver, cubin), benchmark (and
# phases), example.
# minseg is used from this checkout through PYTHONPATH: nothing is built or fetched.
#
# Output, in --out (default $OUT, else ./gpu_check_out): gpu_check.log (everything), summary.txt (a line
# per step and the example's numbers beside the CPU's), the example runs' metrics json and results.png.
#
# --dry-run rehearses the same steps on a machine without a GPU: CuPy is tests/cuda_emulation's stand-in
# (the unchanged kernels as host C++), the GPU tests run on it, the benchmark only starts, and the example
# runs one epoch at 32x32. It checks paths, arguments, the data and the wheels; it measures nothing.
set -uo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo" || exit 1
out=${OUT:-$repo/gpu_check_out}
data=""
wheels=$repo/.gpu_wheels
budget=480
python=${PYTHON:-python3}  # the device machine's python3 is the one with PyTorch and CuPy
dry_run=0
prepare=0
steps=env,cupy,pytest,resources,benchmark,example

usage() { sed -n '2,5p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
    case $1 in
        --out) out=$2; shift 2 ;;
        --data) data=$2; shift 2 ;;
        --wheels) wheels=$2; shift 2 ;;
        --budget) budget=$2; shift 2 ;;
        --steps) steps=$2; shift 2 ;;
        --dry-run) dry_run=1; shift ;;
        --prepare) prepare=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "error: unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
done

# --- before the call: the data travels inside the checkout, in a folder git ignores ------------------
if [ "$prepare" = 1 ]; then
    source_data=${data:-$repo/../shared/data/camvid_tiny}
    [ -d "$source_data/images" ] || { echo "error: no CamVid tiny at $source_data; pass --data DIR" >&2; exit 2; }
    exclude=$(git rev-parse --git-path info/exclude)
    mkdir -p "$(dirname "$exclude")" .gpu_data
    grep -qx '/.gpu_data/' "$exclude" 2>/dev/null || echo '/.gpu_data/' >>"$exclude"
    rm -rf .gpu_data/camvid_tiny && cp -r "$source_data" .gpu_data/camvid_tiny
    echo "copied $source_data to .gpu_data/camvid_tiny ($(du -sh .gpu_data | cut -f1)); git ignores .gpu_data/"
    echo "carry: .gpu_data (and .gpu_wheels if you filled it, see docs/gpu.md)"
    exit 0
fi

if [ -z "$data" ]; then
    for candidate in "$repo/.gpu_data/camvid_tiny" "$repo/../shared/data/camvid_tiny"; do
        [ -d "$candidate/images" ] && { data=$candidate; break; }
    done
fi
mkdir -p "$out"
out=$(cd "$out" && pwd)
log=$out/gpu_check.log
summary=$out/summary.txt
work=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")
: >"$log"
started=$SECONDS
results=()

export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 python
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
if [ "$dry_run" = 1 ]; then
    # Every Python process of the rehearsal imports the emulation as cupy (sitecustomize runs at start-up).
    mkdir -p "$work/emulation"
    printf 'import cuda_emulation\ncuda_emulation.install()\n' >"$work/emulation/sitecustomize.py"
    export PYTHONPATH="$work/emulation:$repo/tests:$PYTHONPATH" MINSEG_CUDA_EMULATION=1
fi

say() { echo "$*" | tee -a "$log"; }
wanted() { [[ ",$steps," == *",$1,"* ]]; }

# step NAME LIMIT COMMAND...: run COMMAND, its output into the log, under min(LIMIT, what the budget has left).
step() {
    local name=$1 limit=$2 left began rc verdict
    shift 2
    left=$((budget - (SECONDS - started)))
    [ "$left" -lt "$limit" ] && limit=$left
    began=$SECONDS
    say ""
    say "=== $name (limit ${limit}s): $*"
    if [ "$limit" -lt 5 ]; then
        rc=124
        say "skipped: the budget of ${budget}s is spent"
    else
        timeout --kill-after=10 "$limit" "$@" >>"$log" 2>&1
        rc=$?
    fi
    case $rc in
        0) verdict=ok ;;
        124|137) verdict=TIMEOUT ;;
        *) verdict="FAILED(rc=$rc)" ;;
    esac
    results+=("$(printf '%-12s %-14s %4d s' "$name" "$verdict" $((SECONDS - began)))")
    say "=== $name: $verdict after $((SECONDS - began)) s"
    return "$rc"
}

say "minseg gpu_check: $(date -u '+%Y-%m-%d %H:%M:%S UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
say "repo $repo; out $out; data ${data:-none found}; wheels $wheels; budget ${budget}s; dry run: $dry_run"

# --- env --------------------------------------------------------------------------------------------
versions() {
    command -v nvidia-smi >/dev/null && nvidia-smi || echo "nvidia-smi: not found"
    command -v nvcc >/dev/null && nvcc --version | tail -2 || echo "nvcc: not found"
    command -v cuobjdump >/dev/null || echo "cuobjdump: not found"
    "$python" - <<'PY'
import platform
import numpy
print("Python", platform.python_version(), "| NumPy", numpy.__version__)
try:
    import cupy
    print("CuPy", cupy.__version__, "| devices", cupy.cuda.runtime.getDeviceCount())
except Exception as error:  # a missing or broken CuPy is what the next step handles
    print("CuPy: not usable:", repr(error))
try:
    import torch
    print("PyTorch", torch.__version__, "| CUDA", torch.version.cuda, "| available", torch.cuda.is_available(),
          "| cuDNN", torch.backends.cudnn.version() if torch.cuda.is_available() else "-")
except ImportError:
    print("PyTorch: not installed (benchmarks/gpu.py prints '-' for its columns)")
PY
}
export -f versions
wanted env && step env 60 bash -c versions

# --- cupy: minseg's kernels compile; else the carried wheels ------------------------------------------
cupy_works() {
    "$python" - <<'PY'
import numpy as np
import minseg
from minseg import backend, cuda
from minseg.cuda import launch
assert backend.cupy_available(), "CuPy sees no usable GPU"
for path in cuda.kernel_sources():
    launch._module(path.stem, 0)
    print("compiled", path.name)
import cupy
x = cupy.asarray(np.ones((1, 2, 4, 4), np.float32))
y = cuda.conv2d_forward(x, cupy.ones((3, 2, 3, 3), np.float32), 1, 1, 1)
assert float(y[0, 0, 1, 1]) == 18.0, y
print("conv2d_forward ran on", minseg.backend.device_of(y))
PY
}
install_wheels() {
    local site=$work/site
    shopt -s nullglob
    local found=("$wheels"/*.whl)
    if [ ${#found[@]} -eq 0 ]; then
        echo "no wheels in $wheels to install"
        return 1
    fi
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
        "${found[@]}" \
        && echo "installed ${#found[@]} wheels into $site"
}
export -f cupy_works install_wheels
export wheels work
if ! wanted cupy; then
    :
elif ! step cupy 180 bash -c cupy_works; then
    if step wheels 120 bash -c install_wheels; then
        export PYTHONPATH="$work/site:$PYTHONPATH"
        step cupy-again 180 bash -c cupy_works
    fi
elif [ "$dry_run" = 1 ] && [ -d "$wheels" ]; then
    step wheels 120 bash -c install_wheels  # rehearse the install; nothing uses it
fi

# --- the GPU tests ----------------------------------------------------------------------------------
if ! wanted pytest; then
    :
elif [ "$dry_run" = 1 ]; then
    step pytest 300 "$python" -m pytest -p cuda_emulation -m gpu -q -rs -p no:cacheprovider
else
    step pytest 300 "$python" -m pytest -m gpu -q -rs -p no:cacheprovider --continue-on-collection-errors
fi

# --- registers and spills: the compiler's and the GPU's --------------------------------------------
capability=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d ' .')
arch=sm_${capability:-90}
wanted resources && step nvrtc 120 "$python" -m tests.cuda_emulation.resources --arch "$arch"
wanted resources && step driver 120 "$python" -m tests.cuda_emulation.resources --loaded
cubin_report() {
    command -v nvcc >/dev/null || { echo "nvcc: not found"; return 1; }
    local source status=0
    for source in kernels/*.cu; do
        nvcc -std=c++17 -ftz=true -arch="$arch" -cubin -Xptxas -v "$source" -o "$work/$(basename "$source" .cu).cubin" \
            2>&1 | grep -E "Compiling entry|registers|spill" || status=1
        if command -v cuobjdump >/dev/null; then
            cuobjdump --dump-resource-usage "$work/$(basename "$source" .cu).cubin" || status=1
        fi
    done
    return $status
}
export -f cubin_report
export arch
wanted resources && step cubin 180 bash -c cubin_report

# --- speed beside cuDNN -----------------------------------------------------------------------------
if ! wanted benchmark; then
    :
elif [ "$dry_run" = 1 ]; then
    step benchmark 60 "$python" benchmarks/gpu.py --help
else
    step benchmark 200 "$python" benchmarks/gpu.py
fi

# The stride-phase split of a strided transposed convolution beside the implicit GEMM it replaces (forced) and
# PyTorch's conv_transpose2d: is the split faster on a GPU? The rehearsal runs one tiny case.
stride_phases() {
    "$python" - "$dry_run" <<'PY'
import statistics
import sys

import numpy as np
import cupy
from minseg import cuda
from minseg.cuda import conv as cuda_conv

# conv_transpose2d of grad_y (N, O, OH, OW) with a (O, C, k, k) weight at stride s, padding p
CASES = [(8, 64, 90, 120, 32, 3, 2, 1), (8, 128, 45, 60, 64, 3, 2, 1), (8, 64, 90, 120, 32, 4, 2, 1),
         (8, 32, 60, 80, 16, 5, 3, 2)]
if sys.argv[1] == "1":
    CASES = [(1, 4, 5, 6, 3, 3, 2, 1)]
try:
    import torch
    torch = torch if torch.cuda.is_available() else None
except ImportError:
    torch = None
if torch is not None:
    torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32 = True, False


def median_ms(fn, events, warmup=3, runs=10):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start, end = events()
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) if hasattr(start, "elapsed_time") else
                     cupy.cuda.get_elapsed_time(start, end))
    return statistics.median(times)


def cupy_events():
    return cupy.cuda.Event(), cupy.cuda.Event()


def torch_events():
    return torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)


rng = np.random.default_rng(0)
print(f"{'grad_y (N,O,OH,OW) -> C, k, s, p':36} {'phases ms':>10} {'implicit ms':>12} {'torch ms':>9} {'max diff':>9}")
for N, O, OH, OW, C, k, s, p in CASES:
    H, W = (OH - 1) * s - 2 * p + k, (OW - 1) * s - 2 * p + k
    grad_y = cupy.asarray(rng.standard_normal((N, O, OH, OW), dtype=np.float32))
    weight = cupy.asarray(rng.standard_normal((O, C, k, k), dtype=np.float32))
    geometry = cuda_conv._conv_geometry("stride_phases", (N, C, H, W), weight.shape, s, p, 1)
    by_phases, implicit = (cupy.empty((N, C, H, W), np.float32) for _ in range(2))
    phases_ms = median_ms(lambda: cuda.conv2d_backward_input(grad_y, weight, (N, C, H, W), s, p, 1, out=by_phases),
                          cupy_events)
    implicit_ms = median_ms(lambda: cuda_conv._conv_gemm("backward_input", grad_y, weight, implicit, geometry,
                                                          N * H * W, C, O * k * k, None, None), cupy_events)
    difference = float(abs(by_phases - implicit).max())
    torch_ms = None
    if torch is not None:
        tg = torch.as_tensor(cupy.asnumpy(grad_y), device="cuda")
        tw = torch.as_tensor(cupy.asnumpy(weight), device="cuda")
        torch_ms = median_ms(lambda: torch.nn.functional.conv_transpose2d(tg, tw, stride=s, padding=p), torch_events)
    print(f"{str((N, O, OH, OW)) + f' -> {C}, {k}, {s}, {p}':36} {phases_ms:10.3f} {implicit_ms:12.3f} "
          f"{'-' if torch_ms is None else f'{torch_ms:9.3f}':>9} {difference:9.2e}")
PY
}
export -f stride_phases
export dry_run
wanted benchmark && step phases 90 bash -c stride_phases

# --- the example, against its CPU numbers -----------------------------------------------------------
example() {  # example NAME EPOCHS LIMIT [extra arguments]
    local name=$1 epochs=$2 limit=$3
    shift 3
    step "$name" "$limit" "$python" examples/camvid_tiny.py --device cuda --data "$data" --epochs "$epochs" \
        --out "$work/$name" --no-progress "$@"
    local rc=$?
    [ -f "$work/$name/metrics.json" ] && cp "$work/$name/metrics.json" "$out/$name.metrics.json"
    return $rc
}
training_seconds() {  # a run's training + validation seconds, rounded up; 0 without its metrics
    "$python" -c 'import json, math, sys; print(math.ceil(json.load(open(sys.argv[1]))["seconds"]))' "$1" \
        2>/dev/null || echo 0
}
# The short run has CPU numbers to compare with; the long one is the example's defaults. The rehearsal
# runs the same logic with 1 and 2 epochs at 32x32.
if [ "$dry_run" = 1 ]; then
    short=1 long=2 sizes=(--resize 32x32)
else
    short=5 long=100 sizes=()
fi
if ! wanted example; then
    :
elif [ -z "$data" ]; then
    say "no CamVid tiny data: pass --data DIR (docs/gpu.md says how it travels); the example is skipped"
    results+=("example      SKIPPED (no data)")
else
    example "example-$short" "$short" 150 "${sizes[@]}"
    seconds=$(training_seconds "$out/example-$short.metrics.json")
    estimate=$((seconds * long / short + 30))
    left=$((budget - (SECONDS - started)))
    if [ "$seconds" -eq 0 ]; then
        say "example-$long not run: example-$short left no metrics to estimate its time from"
        results+=("example-$long  NOT RUN (example-$short failed)")
    elif [ "$estimate" -lt "$left" ]; then
        example "example-$long" "$long" "$left" "${sizes[@]}"
        [ -f "$work/example-$long/results.png" ] &&
            cp "$work/example-$long/results.png" "$out/example-$long.results.png"
    else
        say "example-$long not run: $short epochs took ${seconds}s, so $long would take about ${estimate}s;" \
            "${left}s of the budget are left; a call of its own: --steps example --budget 580"
        results+=("example-$long  NOT RUN (about ${estimate}s > ${left}s left)")
    fi
fi

# --- summary ----------------------------------------------------------------------------------------
{
    echo "minseg gpu_check $(date -u '+%Y-%m-%d %H:%M:%S UTC'); dry run: $dry_run; $((SECONDS - started)) s in all"
    grep -E "^GPU: |Driver Version|^Python |^CuPy |^PyTorch " "$log" | head -5
    echo
    printf '%s\n' "${results[@]}"
    echo
    "$python" - "$out" <<'PY'
import json
import pathlib
import sys

# The CPU runs of the same commands (docs/gpu.md, "A check on a GPU"): float32 on either side, but the GPU sums
# in another order, so the numbers agree closely, not exactly.
CPU = {"example-5": (0.638, 0.668, 0.080), "example-100": (0.830, 0.859, 0.248)}
keys = ("pixel_accuracy", "foreground_accuracy", "mean_iou")
print(f"{'run':12} {'pixel acc':>10} {'fg acc':>10} {'mIoU':>10} {'seconds':>8}   CPU: pixel acc, fg acc, mIoU")
for path in sorted(pathlib.Path(sys.argv[1]).glob("*.metrics.json")):
    name, metrics = path.name.split(".")[0], json.loads(path.read_text())
    cpu = CPU.get(name)
    print(f"{name:12} " + " ".join(f"{metrics[key]:10.3f}" for key in keys) + f" {metrics['seconds']:8.1f}   "
          + (", ".join(f"{value:.3f}" for value in cpu) if cpu else "-"))
PY
} >"$summary" 2>&1
say ""
tee -a "$log" <"$summary"
rm -rf "$work"
# Non-zero when a step failed or ran out of time (a skipped or unplanned step is not a failure).
! printf '%s\n' "${results[@]}" | grep -qE "FAILED|TIMEOUT"
