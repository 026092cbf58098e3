"""The ten-minute GPU check: everything a session lent a GPU should run, in one call.

    pip install -e ".[gpu,test]" && python -m benchmarks.gpu_check [--torch-python PY]

It runs, each step under its own time limit so that one hang cannot eat the device time,
and prints a block a closing note can quote as it is:

1. the device: GPU name, memory, CUDA runtime and CuPy versions;
2. ``pytest -m "gpu and not slow"``: the tests that need a real GPU — among them every
   test the default suite runs on the emulated GPU (tests/test_gpu_emulated_*.py: each
   CUDA kernel against its reference, the fast zoo families forward and backward against
   the CPU, fit() resumed bit for bit with every optimizer, the ``--device gpu`` command
   lines), now against CuPy and the device itself;
3. LeNet-5 trained on MNIST with ``--device gpu`` (one epoch): test accuracy and img/s;
4. benchmark rows on the GPU (``python -m benchmarks --device gpu``), with PyTorch's CUDA
   figures beside them when an interpreter with PyTorch is found.

On a machine without a CUDA GPU it stops at once with one line on stderr and exit
status 2: there is nothing here it could measure.
"""
import argparse
import os
import subprocess
import sys
import time

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (what, seconds allowed): the sum stays under ten minutes with the install before it
STEP_LIMITS = {"pytest": 200, "lenet5": 150, "benchmarks": 180}
BENCHMARK_ROWS = ("lenet5", "resnet18_cifar", "mobilenet_v2")


def describe_device():
    """One line naming the GPU, or None when CuPy sees no CUDA device."""
    from minicnn.backend import cupy_or_none
    cupy = cupy_or_none()
    if cupy is None:
        return None
    properties = cupy.cuda.runtime.getDeviceProperties(0)
    name = properties["name"].decode() if isinstance(properties["name"], bytes) else properties["name"]
    runtime = cupy.cuda.runtime.runtimeGetVersion()
    return (f"{name}, {properties['totalGlobalMem'] / 2**30:.0f} GiB, CUDA runtime "
            f"{runtime // 1000}.{runtime % 1000 // 10}, CuPy {cupy.__version__}")


def run_step(title, command, limit, keep_last=12):
    """Run ``command`` in the repository with a time limit; print its last lines."""
    print(f"\n== {title}  (limit {limit} s)\n$ {' '.join(command)}", flush=True)
    started = time.perf_counter()
    try:
        result = subprocess.run(command, cwd=REPOSITORY, capture_output=True, text=True,
                                timeout=limit)
        status = f"exit {result.returncode}"
        output = (result.stdout + result.stderr).strip().splitlines()
    except subprocess.TimeoutExpired as expired:
        status = f"stopped after {limit} s"
        output = ((expired.stdout or b"").decode(errors="replace")
                  + (expired.stderr or b"").decode(errors="replace")).strip().splitlines()
    for line in output[-keep_last:]:
        print("  " + line)
    print(f"-- {title}: {status} in {time.perf_counter() - started:.0f} s", flush=True)
    return status == "exit 0"


def main(argv=None):
    parser = argparse.ArgumentParser(description="the ten-minute GPU check (see module doc)")
    parser.add_argument("--torch-python", help="a Python interpreter with PyTorch (CUDA) for "
                        "the benchmark comparison; default: this one if it has torch")
    args = parser.parse_args(argv)

    device = describe_device()
    if device is None:
        print("gpu_check: no CUDA GPU is visible to CuPy (not installed, no driver or no "
              "device); run it on a GPU machine after pip install -e \".[gpu,test]\"",
              file=sys.stderr)
        return 2
    print(f"device: {device}")
    python = sys.executable
    results = {
        "pytest -m gpu": run_step("GPU tests", [python, "-m", "pytest", "-q", "-m",
                                                "gpu and not slow", "-p", "no:cacheprovider"],
                                  STEP_LIMITS["pytest"]),
        "LeNet-5 on MNIST": run_step(
            "LeNet-5, MNIST, --device gpu, one epoch",
            [python, "-m", "architectures.lenet5", "--train", "mnist", "--device", "gpu",
             "--epochs", "1", "--save", os.path.join("checkpoints", "gpu-check-lenet5.npz")],
            STEP_LIMITS["lenet5"], keep_last=4),
    }
    benchmark = [python, "-m", "benchmarks", "--device", "gpu", "--skip-cold-start",
                 "--only", *BENCHMARK_ROWS,
                 "--json", os.path.join("benchmarks", "results", "gpu.json")]
    if args.torch_python:
        benchmark += ["--torch-python", args.torch_python]
    results["benchmarks"] = run_step("benchmark rows on the GPU", benchmark,
                                     STEP_LIMITS["benchmarks"], keep_last=len(BENCHMARK_ROWS) + 6)
    print("\nsummary: " + "; ".join(f"{k} {'ok' if ok else 'FAILED'}" for k, ok in results.items()))
    return 0 if all(results.values()) else 1


if __name__ == "__main__":
    sys.path.insert(0, REPOSITORY)
    sys.exit(main())
