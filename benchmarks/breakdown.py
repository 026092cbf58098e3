"""Where a step's time goes: ``python -m benchmarks.breakdown MODEL [--mode inference]``.

For one row of the benchmark suite (benchmarks/run.py's ``ROWS``: the same network, input
and batch), the time of one step split by operation, for minicnn and, with PyTorch beside
it (``--torch-python``), for PyTorch — so a row where minicnn trails says *which*
operations trail, not only that it does::

    python -m benchmarks.breakdown vgg16_bn_cifar --mode inference --torch-python /tmp/torchenv/bin/python

* minicnn: every ``Function``'s ``forward`` and ``backward`` is timed (their methods are
  wrapped, in the measuring process only), a convolution under the name of the algorithm
  that ran (``Conv2d winograd``), and the optimizer's ``step``; where the batch is split
  across threads, over every thread. What the step takes beyond
  their sum is **Python**: module calls, the graph, the backward loop, NumPy glue.
* PyTorch: ``torch.profiler``'s self CPU time of each operator (``aten::mkldnn_convolution``);
  what the step takes beyond their sum is its own Python and dispatch.

Each framework runs in a fresh process with the suite's thread settings; the step is
timed without instrumentation first (``step ms``), then with it (the table; timing each
call costs a little, so instrumented steps are a few percent longer). Inference runs on
the model the suite times: minicnn's with batch norms folded, PyTorch's in eval mode.
"""
import argparse
import json
import os
import subprocess
import sys
import threading
import time

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import worker
from benchmarks.run import REPOSITORY, ROWS, thread_environment, torch_interpreter

PYTHON_GLUE = "Python (not in any operation)"


# ----------------------------------------------------------------------------- measuring

def timed_step(work, args, inference_model):
    """The row's step (a training step, or inference on ``inference_model``), warmed up,
    and its median time in seconds without instrumentation."""
    if args.mode == "inference":
        work.model.eval()
        step = lambda: work.infer(inference_model)                          # noqa: E731
    else:
        work.model.train()
        step = work.train_step
    plain = worker.throughputs(step, args.batch, args.repeat, args.warmup, work.synchronize)
    return step, plain["step_seconds"]


def all_subclasses(cls):
    found = []
    for sub in cls.__subclasses__():
        found += [sub] + all_subclasses(sub)
    return found


class OperationClock:
    """Wall time per operation name, summed over the calls and over the threads that make
    them (an inference batch split across threads times each thread's operations); only
    the outermost call on a thread is timed when one timed method calls another (a
    subclass's forward calling super's)."""

    def __init__(self):
        self.seconds, self.local, self.lock = {}, threading.local(), threading.Lock()

    def wrap(self, owner, method_name, label):
        original = getattr(owner, method_name)
        clock = self

        def timed(self, *args, **kwargs):
            depth = getattr(clock.local, "depth", 0)
            if depth:
                return original(self, *args, **kwargs)
            clock.local.depth = 1
            started = time.perf_counter()
            try:
                return original(self, *args, **kwargs)
            finally:
                clock.local.depth = 0
                elapsed, name = time.perf_counter() - started, label(self)
                with clock.lock:
                    clock.seconds[name] = clock.seconds.get(name, 0.0) + elapsed
        setattr(owner, method_name, timed)


def function_label(direction):
    def label(function):
        name = type(function).__name__
        algorithm = getattr(function, "algorithm", None)      # a convolution's algorithm
        if algorithm is not None and hasattr(algorithm, "name"):
            name += f" {algorithm.name}"
        return name if direction == "forward" else f"{name} backward"
    return label


def instrument_minicnn():
    """Wrap every Function's forward and backward and every optimizer's step."""
    import architectures                          # noqa: F401 (defines every Function)
    from minicnn import optim
    from minicnn.tensor import Function
    clock = OperationClock()
    for cls in all_subclasses(Function):
        for direction in ("forward", "backward"):
            if direction in cls.__dict__:
                clock.wrap(cls, direction, function_label(direction))
    clock.wrap(optim.Optimizer, "step", lambda optimizer: f"{type(optimizer).__name__} step")
    return clock


def breakdown_minicnn(args):
    work = worker.minicnn_workload(args)
    deployed = worker.deployed(work.model, args) if args.mode == "inference" else None
    step, plain = timed_step(work, args, deployed)
    clock = instrument_minicnn()
    started = time.perf_counter()
    for _ in range(args.repeat):
        step()
    work.synchronize()
    total = time.perf_counter() - started
    return report(plain, total, clock.seconds, args.repeat, busy_threads(work, args))


def busy_threads(work, args):
    """Threads that each run the whole step: inference splits the batch across them, and
    so does training where ``minicnn.split_training`` applies (LeNet-5); else one."""
    from minicnn import inference, split_training
    from minicnn.kernels.threads import share_count
    if args.mode == "inference":
        return share_count(args.batch, inference.MIN_SAMPLES_PER_THREAD, args.threads)
    if split_training.split_reason(work.model, work.images.data, args.threads) is None:
        return share_count(args.batch, split_training.MIN_SAMPLES_PER_THREAD, args.threads)
    return 1


def breakdown_torch(args):
    from torch.profiler import ProfilerActivity, profile, schedule
    work = worker.torch_workload(args)
    step, plain = timed_step(work, args, work.model)
    # The profiler's first steps cost far more than the rest: two are run and discarded.
    with profile(activities=[ProfilerActivity.CPU],
                 schedule=schedule(wait=1, warmup=1, active=args.repeat)) as profiler:
        for _ in range(2):
            step()
            profiler.step()
        started = time.perf_counter()
        for _ in range(args.repeat):
            step()
            profiler.step()
        total = time.perf_counter() - started
    # ranges the profiler opens itself ("ProfilerStep#3") time Python, not an operator
    seconds = {event.key: event.self_cpu_time_total / 1e6
               for event in profiler.key_averages()
               if event.self_cpu_time_total > 0 and not event.key.startswith("ProfilerStep")}
    return report(plain, total, seconds, args.repeat)


def report(plain_seconds, instrumented_seconds, seconds, repeat, threads=1):
    """ms per step: the plain median, the instrumented mean, and each operation's time,
    summed over ``threads`` threads that each run the whole step (minicnn's inference, and
    LeNet-5's training: the batch split across them) — so the shares are of ``threads`` ×
    the step."""
    per_step = {name: 1e3 * s / repeat for name, s in seconds.items()}
    step_ms = 1e3 * instrumented_seconds / repeat
    per_step[PYTHON_GLUE] = max(0.0, threads * step_ms - sum(per_step.values()))
    return dict(step_ms=1e3 * plain_seconds, instrumented_step_ms=step_ms, threads=threads,
                operations=sorted(per_step.items(), key=lambda item: -item[1]))


# ----------------------------------------------------------------------------- the table

def format_breakdown(framework, result, top):
    threads = result.get("threads", 1)
    lines = [f"{framework}: step {result['step_ms']:.2f} ms "
             f"(instrumented {result['instrumented_step_ms']:.2f} ms"
             + (f"; the batch split across {threads} threads, times summed over them)"
                if threads > 1 else ")")]
    total = threads * result["instrumented_step_ms"]
    shown = result["operations"][:top]
    rest = sum(ms for _, ms in result["operations"][top:])
    width = max(len(name) for name, _ in shown + [("other operations", 0)])
    for name, ms in shown + ([("other operations", rest)] if rest else []):
        lines.append(f"  {name:<{width}}  {ms:9.3f} ms  {100 * ms / total:5.1f}%")
    return "\n".join(lines)


def run_breakdown(python, framework, args):
    command = [python, "-m", "benchmarks.breakdown", args.model, "--worker", framework,
               "--mode", args.mode, "--batch", str(args.batch), "--repeat", str(args.repeat),
               "--warmup", str(args.warmup), "--threads", str(args.threads)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPOSITORY,
                          env=thread_environment(args.threads))
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        return {"error": lines[-1] if lines else "failed"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def row_of(model):
    for row in ROWS:
        if row[0] == model:
            return row
    raise SystemExit(f"benchmarks.breakdown: no benchmark row is called {model!r}; the rows "
                     f"are {', '.join(sorted({row[0] for row in ROWS}))}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", help="a row of the benchmark suite (its network's name)")
    parser.add_argument("--mode", choices=("train", "inference"), default="train")
    parser.add_argument("--batch", type=int, help="default: the row's batch")
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--top", type=int, default=12, help="operations listed (the rest summed)")
    parser.add_argument("--torch-python", help="a Python interpreter with PyTorch installed")
    parser.add_argument("--json", help="also write both breakdowns here")
    parser.add_argument("--worker", choices=("minicnn", "torch"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    model, channels, size, batch, classes, _ = row_of(args.model)
    args.batch = args.batch or batch
    if args.worker:                                  # inside the measuring process
        args.channels, args.size, args.classes, args.device = channels, size, classes, "cpu"
        measure = breakdown_torch if args.worker == "torch" else breakdown_minicnn
        print(json.dumps(measure(args)))
        return
    print(f"{model}, {channels}×{size}×{size}, batch {args.batch}, {args.mode}, "
          f"{args.threads} threads, {args.repeat} steps")
    results = {"minicnn": run_breakdown(sys.executable, "minicnn", args)}
    torch_python, _ = torch_interpreter(args.torch_python)
    if torch_python:
        results["torch"] = run_breakdown(torch_python, "torch", args)
    for framework, result in results.items():
        print(f"{framework}: error: {result['error']}" if "error" in result
              else format_breakdown(framework, result, args.top))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(model=model, batch=args.batch, mode=args.mode, **results), f, indent=1)


if __name__ == "__main__":
    main()
