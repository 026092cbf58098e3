"""benchmarks/gpu_check.py: the one-call GPU check refuses clearly where there is no GPU, and
on the emulated GPU it names the device and runs its three steps on the GPU."""
import subprocess
import sys

import pytest

from benchmarks import gpu_check
from minicnn.backend import gpu_available
from tests.gpu_emulation import emulated_gpu


@pytest.mark.skipif(gpu_available(), reason="this machine has a GPU: the check would run")
def test_without_a_gpu_it_says_so_in_one_line_and_exits_2():
    result = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "no CUDA GPU" in lines[0], result.stderr


def test_the_benchmark_worker_refuses_an_unknown_device():
    result = subprocess.run([sys.executable, "-m", "benchmarks.worker", "--framework", "minicnn",
                             "--model", "lenet5", "--batch", "2", "--size", "28",
                             "--device", "tpu"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "invalid choice: 'tpu'" in result.stderr


def test_on_a_gpu_it_names_the_device_and_runs_each_step_there(monkeypatch, capsys):
    steps = []

    def record(title, command, limit, keep_last=12):
        steps.append((title, command, limit))
        return True
    monkeypatch.setattr(gpu_check, "run_step", record)
    with emulated_gpu():
        assert gpu_check.main(["--torch-python", "/opt/torch/bin/python"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("device: host emulation of a CUDA GPU, 16 GiB, CUDA runtime 12.4")
    assert "summary: pytest -m gpu ok; LeNet-5 on MNIST ok; benchmarks ok" in out
    (_, tests, _), (_, lenet, _), (_, benchmark, _) = steps
    assert tests[-4:-2] == ["-m", "gpu and not slow"]
    assert lenet[lenet.index("--device") + 1] == "gpu" and "mnist" in lenet
    assert benchmark[benchmark.index("--device") + 1] == "gpu"
    assert benchmark[-2:] == ["--torch-python", "/opt/torch/bin/python"]
    assert sum(limit for _, _, limit in steps) <= 9 * 60       # and the install before them


def test_the_benchmark_worker_measures_a_gpu_step_on_the_emulated_gpu():
    """The worker's GPU branch: the model moved, every step synchronised, the peak read
    from CuPy's memory pool (what the device check's benchmark rows report)."""
    import argparse
    from benchmarks import worker
    args = argparse.Namespace(model="lenet5", batch=2, size=28, channels=1, classes=10,
                              repeat=2, warmup=1, threads=1, device="gpu",
                              compile_ahead=False)
    with emulated_gpu():
        result = worker.run_minicnn(args)
    assert result["device"] == "gpu" and result["params"] == 44_426
    assert result["gpu_peak_mb"] > 0
    assert result["train"]["median"] > 0 and result["inference"]["median"] > 0
