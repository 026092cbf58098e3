"""benchmarks/gpu_check.py: the one-call GPU check refuses clearly where there is no GPU."""
import subprocess
import sys

import pytest

from minicnn.backend import gpu_available


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
