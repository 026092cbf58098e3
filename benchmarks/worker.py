"""One measurement in a fresh process: ``python -m benchmarks.worker --framework F --model M
--batch B --size S --channels C --classes K --repeat R --threads T [--device gpu]``.

Prints one JSON line: training and inference throughput (median, min, max images/s),
the parameter count, and the peak resident memory of the process (which, as it runs
nothing else, is the peak of a training step plus the interpreter and libraries; the
baseline after building the model is reported too), and the BLAS library threadpoolctl
sees loaded (with the kernel it chose for this CPU).

minicnn's inference is timed on the model a user would deploy, ``minicnn.inference.deploy``:
batch norms folded into the convolutions before them, the batch split across the threads
(``inference``); the trained model in eval mode, the batch not split, is timed as well
(``inference_unfolded``). PyTorch's is its eval-mode model
under ``no_grad`` (eager PyTorch does not fold batch norm by itself).

Each framework runs in its own process so that memory peaks and thread pools do not mix.

On ``--device gpu`` every timed step ends with a device synchronisation (kernels launch
asynchronously: without it a step would be timed by its launches, not its work), and the
peak is the GPU memory the framework's allocator handed out (CuPy's memory pool, PyTorch's
``max_memory_allocated``), reported as ``gpu_peak_mb``.
"""
import argparse
import json
import os
import resource
import sys
import time


def _peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def throughputs(step, batch, repeat, warmup, synchronize=lambda: None):
    for _ in range(warmup):
        step()
    synchronize()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        step()
        synchronize()
        times.append(time.perf_counter() - started)
    times.sort()
    median = times[len(times) // 2] if len(times) % 2 else sum(times[len(times) // 2 - 1:len(times) // 2 + 1]) / 2
    return dict(median=batch / median, min=batch / times[-1], max=batch / times[0],
                step_seconds=median)


def blas_libraries():
    """The BLAS and OpenMP libraries this process loaded, as threadpoolctl reports them
    (which kernel OpenBLAS picked for the CPU: "Haswell", "SkylakeX", ...), or None."""
    import numpy                              # noqa: F401  (loads its BLAS, if not yet)
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    keys = ("user_api", "internal_api", "version", "architecture", "threading_layer",
            "num_threads")
    return [{key: entry[key] for key in keys if key in entry} for entry in threadpool_info()]


def training_loss(outputs, labels, cross_entropy):
    """A classifier's cross-entropy; for a detector (per-level class and box maps, a tuple
    of lists) the sum of every map's mean, so that the step is a forward and a backward
    through all of the network. (The mean, not the sum: a sum's gradient, of the size of
    the maps, made the SGD steps diverge to overflow within a few repetitions.)"""
    if isinstance(outputs, tuple) and isinstance(outputs[0], list):
        maps = [m for level_maps in outputs for m in level_maps]
        total = maps[0].mean()
        for m in maps[1:]:
            total = total + m.mean()
        return total
    return cross_entropy(outputs, labels)


class Workload:
    """One row's network and data, ready to time: ``train_step()`` (forward, backward and
    an SGD step on the fixed random batch ``images``), ``infer(model)`` (a forward under
    no_grad) and ``synchronize()`` (waits for the GPU; nothing on the CPU)."""

    def __init__(self, model, images, train_step, infer, synchronize):
        self.model, self.images, self.train_step, self.infer = model, images, train_step, infer
        self.synchronize = synchronize


def minicnn_workload(args):
    import numpy as np
    import architectures
    from minicnn import Tensor, functional as F, no_grad, train
    from minicnn.backend import cupy_or_none, to_device
    from minicnn.optim import SGD

    model = architectures.create(args.model, num_classes=args.classes, in_channels=args.channels,
                                 **({"aux_logits": False} if args.model == "googlenet" else {}))
    model.to(args.device)
    rng = np.random.default_rng(0)
    images = rng.standard_normal((args.batch, args.channels, args.size, args.size))
    x = Tensor(to_device(images.astype(np.float32), args.device))
    labels = to_device(rng.integers(0, args.classes, args.batch), args.device)
    cupy = cupy_or_none() if args.device == "gpu" else None
    optimizer = SGD(list(model.parameters()), lr=0.01, momentum=0.9)

    detector = args.model.startswith("efficientdet")

    def train_step():
        if not detector:          # what the command line runs (minicnn.train.train_step)
            train.train_step(model, optimizer, x, labels)
            return
        optimizer.zero_grad()
        loss = training_loss(model(x), labels, F.cross_entropy)
        loss.backward()
        optimizer.step()

    def infer(network):
        with no_grad():
            network(x)
    return Workload(model, x, train_step, infer,
                    cupy.cuda.Device().synchronize if cupy else (lambda: None))


def deployed(model, args):
    """What a user deploying the model runs, ``minicnn.inference.deploy``: batch norms
    folded into the convolutions before them (traced on the real data flow), and each
    inference batch split across the threads."""
    from minicnn.inference import deploy
    return deploy(model, input_size=args.size, in_channels=args.channels)


def run_minicnn(args):
    work = minicnn_workload(args)
    baseline = _peak_rss_mb()
    started = time.perf_counter()
    if args.compile_ahead:       # as the command line does it, without a data set to load
        from minicnn.warm import warm_up
        warm_up(work.model, (args.channels, args.size, args.size)).join()
    work.model.train()
    work.train_step()
    work.synchronize()
    first_step = time.perf_counter() - started
    train = throughputs(work.train_step, args.batch, args.repeat, args.warmup,
                         work.synchronize)
    peak_train = _peak_rss_mb()
    gpu_peak = None
    if args.device == "gpu":
        from minicnn.backend import cupy_or_none
        gpu_peak = cupy_or_none().get_default_memory_pool().total_bytes() / 2**20
    work.model.eval()

    def inference_of(network):
        return throughputs(lambda: work.infer(network), args.batch, args.repeat,
                            args.warmup, work.synchronize)
    # The folded model (what a user deploys) and the model as trained, in eval mode.
    folded = deployed(work.model, args)
    inference = inference_of(folded)
    unfolded = inference_of(work.model)
    return dict(params=work.model.num_parameters(), train=train, inference=inference,
                inference_unfolded=unfolded, folded_batchnorms=len(folded.folded_pairs),
                first_step_seconds=first_step, baseline_rss_mb=baseline, peak_rss_mb=peak_train,
                gpu_peak_mb=gpu_peak, device=args.device, blas=blas_libraries())


def torch_workload(args):
    import torch
    from benchmarks.torch_models import BUILDERS
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = "cuda" if args.device == "gpu" else "cpu"
    model = BUILDERS[args.model](args.classes).to(device)
    if args.channels != 3:  # only LeNet takes grayscale here; its builder already does
        assert args.model == "lenet5"
    x = torch.randn(args.batch, args.channels, args.size, args.size, device=device)
    labels = torch.randint(0, args.classes, (args.batch,), device=device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()

    def train_step():
        optimizer.zero_grad()
        training_loss(model(x), labels, loss_fn).backward()
        optimizer.step()

    def infer(network):
        with torch.no_grad():
            network(x)
    return Workload(model, x, train_step, infer,
                    torch.cuda.synchronize if device == "cuda" else (lambda: None))


def run_torch(args):
    import torch
    work = torch_workload(args)
    baseline = _peak_rss_mb()
    started = time.perf_counter()
    work.model.train()
    work.train_step()
    work.synchronize()
    first_step = time.perf_counter() - started
    train = throughputs(work.train_step, args.batch, args.repeat, args.warmup,
                         work.synchronize)
    peak_train = _peak_rss_mb()
    gpu_peak = torch.cuda.max_memory_allocated() / 2**20 if args.device == "gpu" else None
    work.model.eval()
    inference = throughputs(lambda: work.infer(work.model), args.batch, args.repeat,
                             args.warmup, work.synchronize)
    params = sum(p.numel() for p in work.model.parameters() if p.requires_grad)
    return dict(params=params, train=train, inference=inference, first_step_seconds=first_step,
                baseline_rss_mb=baseline, peak_rss_mb=peak_train, gpu_peak_mb=gpu_peak,
                device=args.device, version=torch.__version__, blas=blas_libraries(),
                cpu_capability=torch.backends.cpu.get_cpu_capability())


def main(argv=None):
    parser = argparse.ArgumentParser(description="one benchmark measurement (JSON on stdout)")
    parser.add_argument("--framework", choices=("minicnn", "torch"), required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--batch", type=int, required=True)
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=3,
                        help="untimed steps first: kernel compilation, thread pools, allocator")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--compile-ahead", action="store_true",
                        help="compile the kernels with minicnn.warm.warm_up before the first "
                             "step (on every core, as the command line does); its time "
                             "counts in the first step")
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    args = parser.parse_args(argv)
    result = run_torch(args) if args.framework == "torch" else run_minicnn(args)
    print(json.dumps(result))


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    main()
