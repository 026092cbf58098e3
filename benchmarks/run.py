"""The benchmark suite: ``python -m benchmarks`` (or ``python benchmarks/run.py``).

For every row — a network, an input size and a batch — it measures, each framework in a
fresh subprocess of its own, the two alternating, ``--rounds`` times (default 5; the table
gives the median of the rounds, the JSON every round's figure). One round per row was too
few on a shared two-core machine: LeNet-5's ratio to PyTorch moved between 0.85 and 1.65
from one run to the next, each framework's figure as much as 1.7× by itself. Three were
too few as well: on the virtual machine these figures come from, a fresh process runs
at one of two speeds about 1.35× apart and keeps it (ResNet-18's training rounds in one
run: 64.0, 46.2, 46.4 images/s; the same code's user CPU time for the same steps rose by
as much), so the median of three can be two slow draws:

* training throughput (images/s; median of ≥ 5 timed steps after a warm-up step, min and
  max shown) and inference throughput;
* effective GFLOP/s of a training step: the summary's forward FLOPs × 3 (forward, and a
  backward that costs about two forwards) ÷ step time, and its fraction of the BLAS sgemm
  rate measured on the same cores in the same run (the machine's practical limit);
* the peak resident memory of the process around a training step;
* inference on the model a user deploys (batch norms folded, ``minicnn.fold``) and on
  the trained model in eval mode (benchmarks/worker.py says why);
* with PyTorch installed (never a dependency: point ``--torch-python`` at an interpreter
  that has it, or install it beside minicnn), the same network written in ``torch.nn``
  (benchmarks/torch_models.py), at the same thread count, and the ratio minicnn / PyTorch.

Then the Numba cold-start cost (the first training step with an empty kernel cache, once
compiling as it goes and once compiled ahead on every core as the command line does, and
with a warm cache) and the time ``python -m architectures.lenet5 --help`` takes to answer.

Results go to the terminal and to a JSON file (``--json``, default
benchmarks/results/latest.json): every row's figures and its ratios to PyTorch
(``ratio_minicnn_over_torch``), and the machine: CPU model, SIMD flags (avx2, avx512f),
``OPENBLAS_CORETYPE``, and the BLAS libraries threadpoolctl sees with the kernel OpenBLAS
chose (its ``architecture``), for this process and each worker. Measure on a quiet machine: two threads per framework
on two cores means any other busy process halves the figures.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.timing import gemm_rate

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (registry name, channels, input side, batch, classes, timed repetitions)
# LeNet-5's steps take 4–15 ms, so one stray scheduler hiccup moves a short median: with
# 20 repetitions its ratio to PyTorch moved between 0.9 and 1.5 from run to run.
ROWS = [
    ("lenet5", 1, 28, 64, 10, 100),
    ("lenet5", 1, 28, 128, 10, 100),
    ("lenet5", 1, 28, 256, 10, 100),
    ("resnet18_cifar", 3, 32, 64, 10, 5),
    ("vgg16_bn_cifar", 3, 32, 64, 10, 5),
    ("mobilenet_v2", 3, 64, 32, 10, 5),
    ("densenet121", 3, 64, 16, 10, 5),
    ("googlenet", 3, 64, 16, 10, 5),
    ("resnet50_b", 3, 224, 8, 1000, 3),   # stride on the 3×3, as torch_models.resnet50
    ("resnext50_32x4d", 3, 64, 16, 10, 5),
    ("efficientnet_b0", 3, 64, 32, 10, 5),
    ("efficientdet_d0", 3, 128, 4, 90, 3),  # detector: loss = sum of its outputs
]

# Rows timed for minicnn alone, until benchmarks/torch_models.py has a torch.nn twin equal
# to the parameter (a twin that differs would make the ratio a guess). None at present:
# EfficientDet-D0's twin has the official 3,880,067 parameters, as minicnn's.
WITHOUT_TORCH_TWIN = set()


def machine_description():
    """The CPU model, the SIMD flags that decide BLAS's kernels, and the BLAS libraries
    (threadpoolctl's view, with OpenBLAS's chosen kernel) of this process."""
    from benchmarks.worker import blas_libraries
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
    except OSError:                      # not Linux: the model name from platform only
        pass
    simd = {flag: flag in flags for flag in ("avx2", "avx512f", "fma")} if flags else None
    return dict(processor=model, cores=os.cpu_count(), python=platform.python_version(),
                simd_flags=simd, openblas_coretype=os.environ.get("OPENBLAS_CORETYPE"),
                blas=blas_libraries())


def blas_kernel(machine):
    """One phrase for the BLAS kernel, e.g. "openblas 0.3.27 SkylakeX"."""
    for library in machine.get("blas") or []:
        if library.get("user_api") == "blas":
            return " ".join(str(library.get(key, "")) for key in
                            ("internal_api", "version", "architecture")).strip()
    return "unknown"


def thread_environment(threads, extra=None):
    env = dict(os.environ)
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                 "NUMBA_NUM_THREADS"):
        env[name] = str(threads)
    env["PYTHONPATH"] = REPOSITORY + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra or {})
    return env


def run_worker(python, framework, row, threads, repeat=None, extra_env=None, timeout=900,
               device="cpu", extra_args=()):
    model, channels, size, batch, classes, default_repeat = row
    command = [python, "-m", "benchmarks.worker", "--framework", framework, "--model", model,
               "--batch", str(batch), "--size", str(size), "--channels", str(channels),
               "--classes", str(classes), "--repeat", str(repeat or default_repeat),
               "--threads", str(threads), "--device", device, *extra_args]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPOSITORY,
                            env=thread_environment(threads, extra_env), timeout=timeout)
    if result.returncode != 0:
        return {"error": result.stderr.strip().splitlines()[-1] if result.stderr else "failed"}
    return json.loads(result.stdout.strip().splitlines()[-1])


def torch_interpreter(requested):
    """The Python that has PyTorch: ``requested``, else this one if it has it, else None."""
    for candidate in ([requested] if requested else []) + [sys.executable]:
        probe = subprocess.run([candidate, "-c", "import torch; print(torch.__version__)"],
                               capture_output=True, text=True)
        if probe.returncode == 0:
            return candidate, probe.stdout.strip()
    return None, None


def forward_flops(row):
    """FLOPs of one forward pass of the whole batch, from minicnn's cost table."""
    import architectures
    from minicnn.summary import summary
    model_name, channels, size, batch, classes, _ = row
    options = {"aux_logits": False} if model_name == "googlenet" else {}
    model = architectures.create(model_name, num_classes=classes, in_channels=channels, **options)
    try:
        table = summary(model, (channels, size, size), batch_size=batch, format="dict")
    except Exception as error:          # a row is still timed without its FLOP count
        print(f"  (no FLOP count for {model_name}: {error})", file=sys.stderr)
        return None
    return table["total"]["flops"]


def combine_rounds(results):
    """One framework's rounds of a row as one result: each throughput the median of the
    rounds' medians (their list kept as ``rounds``), its min and max over every timed step
    of every round; the peak memory the largest; everything else the first round's. A
    round that failed or was skipped stands for the row when no round succeeded."""
    measured = [r for r in results if r and "train" in r]
    if not measured:
        return results[0]
    combined = dict(measured[0])
    for key in ("train", "inference", "inference_unfolded"):
        if combined.get(key) is not None:
            medians = [r[key]["median"] for r in measured]
            combined[key] = dict(median=statistics.median(medians),
                                 min=min(r[key]["min"] for r in measured),
                                 max=max(r[key]["max"] for r in measured), rounds=medians)
    combined["peak_rss_mb"] = max(r["peak_rss_mb"] for r in measured)
    return combined


def ratios(entry):
    """minicnn ÷ PyTorch for each throughput (> 1: minicnn is faster), peak memory too."""
    m, t = entry["minicnn"], entry.get("torch")
    if not t or "error" in m or "train" not in t:
        return None
    result = dict(train=m["train"]["median"] / t["train"]["median"],
                  inference=m["inference"]["median"] / t["inference"]["median"],
                  peak_memory=m["peak_rss_mb"] / t["peak_rss_mb"])
    if "inference_unfolded" in m:
        result["inference_unfolded"] = (m["inference_unfolded"]["median"]
                                        / t["inference"]["median"])
    return result


def cold_start(python, threads):
    """First LeNet-5 training step with an empty Numba cache — compiling as it goes, and
    compiled ahead on every core as the command line does (``minicnn.warm``) — then with
    the cache warm."""
    row = ("lenet5", 1, 28, 128, 10, 1)
    with tempfile.TemporaryDirectory() as cache:
        env = {"NUMBA_CACHE_DIR": cache}
        empty = run_worker(python, "minicnn", row, threads, repeat=1, extra_env=env)
        warm = run_worker(python, "minicnn", row, threads, repeat=1, extra_env=env)
    with tempfile.TemporaryDirectory() as cache:
        ahead = run_worker(python, "minicnn", row, threads, repeat=1,
                           extra_env={"NUMBA_CACHE_DIR": cache}, extra_args=["--compile-ahead"])
    started = time.perf_counter()
    subprocess.run([python, "-m", "architectures.lenet5", "--help"], capture_output=True,
                   cwd=REPOSITORY, env=thread_environment(threads))
    help_seconds = time.perf_counter() - started
    return dict(first_step_empty_cache_s=empty.get("first_step_seconds"),
                first_step_compiled_ahead_s=ahead.get("first_step_seconds"),
                first_step_warm_cache_s=warm.get("first_step_seconds"),
                help_seconds=help_seconds)


def _fmt(value, spec):
    return "—" if value is None else format(value, spec)


def format_table(results, peak):
    header = ["network", "input", "batch", "train img/s (min–max)", "GF/s", "% peak",
              "infer img/s", "peak MB", "torch train", "torch infer", "torch MB",
              "train ×torch", "infer ×torch"]
    lines = [header]
    for r in results:
        m, t = r["minicnn"], r.get("torch")
        if "error" in m:
            lines.append([r["model"], r["input"], str(r["batch"]), "error: " + m["error"]] + [""] * 9)
            continue
        gflops = r["flops"] * 3 / 1e9 * m["train"]["median"] / r["batch"] if r.get("flops") else None
        row = [r["model"], r["input"], str(r["batch"]),
               f"{m['train']['median']:.1f} ({m['train']['min']:.1f}–{m['train']['max']:.1f})",
               _fmt(gflops, ".1f"), _fmt(None if gflops is None else 100 * gflops / peak, ".0f"),
               f"{m['inference']['median']:.1f}", f"{m['peak_rss_mb']:.0f}"]
        if t is None:
            row += ["not installed"] * 5
        elif "skipped" in t:
            row += ["no twin"] * 5
        elif "error" in t:
            row += ["error"] * 5
        else:
            row += [f"{t['train']['median']:.1f}", f"{t['inference']['median']:.1f}",
                    f"{t['peak_rss_mb']:.0f}",
                    f"{m['train']['median'] / t['train']['median']:.2f}",
                    f"{m['inference']['median'] / t['inference']['median']:.2f}"]
        lines.append(row)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.rjust(w) if i > 1 else cell.ljust(w)
                               for i, (cell, w) in enumerate(zip(line, widths))) for line in lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description="minicnn benchmark suite (see module docstring)")
    parser.add_argument("--threads", type=int, default=2, help="threads per framework (default 2)")
    parser.add_argument("--torch-python", help="a Python interpreter with PyTorch installed")
    parser.add_argument("--only", nargs="*", help="only these networks (registry names)")
    parser.add_argument("--json", default=os.path.join(REPOSITORY, "benchmarks", "results",
                                                       "latest.json"))
    parser.add_argument("--rounds", type=int, default=5,
                        help="times each row is measured, the frameworks alternating; the "
                             "table gives the median of the rounds (default 5)")
    parser.add_argument("--skip-cold-start", action="store_true")
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu",
                        help="where both frameworks run (gpu: CuPy and PyTorch's CUDA)")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, got {args.rounds}")

    torch_python, torch_version = torch_interpreter(args.torch_python)
    if args.device == "gpu":
        from minicnn.backend import cupy_or_none
        cupy = cupy_or_none()
        if cupy is None:
            sys.exit("benchmarks: --device gpu needs CuPy and a CUDA GPU; none is visible")
        peak, rate_name = gemm_rate(4096, 4096, 4096, xp=cupy), "cuBLAS sgemm 4096³ (CuPy)"
    else:
        peak, rate_name = gemm_rate(2048, 2048, 2048), "BLAS sgemm 2048³ (NumPy)"
    machine = machine_description()
    print(f"machine: {machine['processor']}, {machine['cores']} cores, SIMD "
          f"{machine['simd_flags']}, BLAS {blas_kernel(machine)}; "
          f"{args.threads} threads per framework; device {args.device}")
    print(f"{rate_name}: {peak:.1f} GFLOP/s; PyTorch: {torch_version or 'not installed'}\n")
    results = []
    for row in ROWS:
        if args.only and row[0] not in args.only:
            continue
        model, channels, size, batch, classes, _ = row
        entry = dict(model=model, input=f"{channels}×{size}×{size}", batch=batch,
                     classes=classes, flops=forward_flops(row))
        rounds = []
        for _ in range(args.rounds):        # minicnn, PyTorch, minicnn, PyTorch, ...
            measured = dict(minicnn=run_worker(sys.executable, "minicnn", row, args.threads,
                                               device=args.device))
            if not torch_python:
                measured["torch"] = None
            elif model in WITHOUT_TORCH_TWIN:
                measured["torch"] = {"skipped": "no torch.nn twin in benchmarks/torch_models.py"}
            else:
                measured["torch"] = run_worker(torch_python, "torch", row, args.threads,
                                               device=args.device)
            rounds.append(measured)
        entry["minicnn"] = combine_rounds([r["minicnn"] for r in rounds])
        entry["torch"] = combine_rounds([r["torch"] for r in rounds])
        entry["ratio_minicnn_over_torch"] = ratios(entry)
        results.append(entry)
        print(f"  measured {model} batch {batch}", flush=True)
    print()
    print(format_table(results, peak))
    report = dict(machine=machine, device=args.device, threads=args.threads, gemm_peak_gflops=peak, torch_version=torch_version,
                  rows=results)
    if not args.skip_cold_start and args.device == "cpu":
        report["cold_start"] = cold_start(sys.executable, args.threads)
        c = report["cold_start"]
        print(f"\nNumba cold start, first LeNet-5 training step (batch 128): empty cache "
              f"{_fmt(c['first_step_empty_cache_s'], '.2f')} s, compiled ahead on every core "
              f"(minicnn.warm, as the command line does) "
              f"{_fmt(c['first_step_compiled_ahead_s'], '.2f')} s, warm cache "
              f"{_fmt(c['first_step_warm_cache_s'], '.2f')} s; "
              f"`python -m architectures.lenet5 --help`: {c['help_seconds']:.2f} s")
    os.makedirs(os.path.dirname(args.json), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(report, f, indent=2)
    print(f"\nwritten: {args.json}")


if __name__ == "__main__":
    main()
