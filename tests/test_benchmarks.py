"""The benchmark suite's bookkeeping (no timing is asserted): the machine it records, the
ratios it writes, the detector's training loss, and one worker run end to end."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import architectures
from benchmarks import run
from benchmarks.worker import training_loss
from minicnn import Tensor, functional as F

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_machine_description_names_the_cpu_its_simd_and_the_blas_kernel():
    machine = run.machine_description()
    assert machine["processor"] and machine["cores"] >= 1
    if os.path.exists("/proc/cpuinfo"):
        assert set(machine["simd_flags"]) == {"avx2", "avx512f", "fma"}
    blas = [library for library in machine["blas"] or [] if library["user_api"] == "blas"]
    if blas:                             # NumPy's BLAS, as threadpoolctl reports it
        assert run.blas_kernel(machine).startswith(blas[0]["internal_api"])


def _measured(train, inference, memory):
    return {"train": {"median": train, "min": train, "max": train},
            "inference": {"median": inference}, "peak_rss_mb": memory}


def test_ratios_are_minicnn_over_torch_and_absent_without_torch():
    entry = {"minicnn": dict(_measured(30.0, 120.0, 500.0), inference_unfolded={"median": 90.0}),
             "torch": _measured(20.0, 100.0, 400.0)}
    assert run.ratios(entry) == {"train": 1.5, "inference": 1.2, "peak_memory": 1.25,
                                 "inference_unfolded": 0.9}
    assert run.ratios({"minicnn": entry["minicnn"], "torch": None}) is None
    skipped = {"minicnn": entry["minicnn"], "torch": {"skipped": "no twin"}}
    assert run.ratios(skipped) is None
    table = run.format_table([dict(model="efficientdet_d0", input="3×128×128", batch=4,
                                   flops=None, **skipped)], peak=100.0)
    assert "no twin" in table.splitlines()[1]


def test_rounds_combine_as_the_median_of_their_medians_and_the_extremes_of_every_step():
    rounds = [{"train": {"median": m, "min": m - 1, "max": m + 1},
               "inference": {"median": 10 * m, "min": 10 * m, "max": 10 * m},
               "peak_rss_mb": m, "params": 7} for m in (30.0, 10.0, 20.0)]
    combined = run.combine_rounds(rounds + [{"error": "killed"}])
    assert combined["train"] == {"median": 20.0, "min": 9.0, "max": 31.0,
                                 "rounds": [30.0, 10.0, 20.0]}
    assert combined["inference"]["median"] == 200.0
    assert combined["peak_rss_mb"] == 30.0 and combined["params"] == 7
    assert run.combine_rounds([{"error": "killed"}, {"error": "again"}]) == {"error": "killed"}
    assert run.combine_rounds([None, None]) is None                    # PyTorch not installed


def test_a_detectors_training_loss_reaches_every_output_map():
    maps = [Tensor(np.full((2, 3, 4, 4), float(k)), requires_grad=True) for k in range(4)]
    loss = training_loss((maps[:2], maps[2:]), None, F.cross_entropy)
    assert loss.item() == 0 + 1 + 2 + 3
    loss.backward()
    for m in maps:
        np.testing.assert_allclose(m.grad, np.full(m.shape, 1 / m.data.size))


def test_a_worker_run_reports_folded_and_unfolded_inference_and_its_blas():
    command = [sys.executable, "-m", "benchmarks.worker", "--framework", "minicnn",
               "--model", "lenet5", "--batch", "4", "--size", "28", "--channels", "1",
               "--repeat", "1", "--warmup", "0", "--threads", "1"]
    env = run.thread_environment(1)
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPOSITORY, env=env,
                            timeout=600)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["params"] == architectures.create("lenet5", num_classes=10,
                                                    in_channels=1).num_parameters()
    assert report["inference"]["median"] > 0 and report["inference_unfolded"]["median"] > 0
    assert report["folded_batchnorms"] == 0          # LeNet-5 has no batch norm
    assert report["blas"] is None or isinstance(report["blas"], list)


def test_the_breakdown_names_each_operation_and_leaves_the_rest_to_python():
    """No timing asserted: every Function of LeNet-5's training step is named (convolutions
    by algorithm), and the parts add up to the instrumented step."""
    command = [sys.executable, "-m", "benchmarks.breakdown", "lenet5", "--worker", "minicnn",
               "--batch", "4", "--repeat", "2", "--warmup", "1", "--threads", "1"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPOSITORY,
                            env=run.thread_environment(1), timeout=600)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    from benchmarks.breakdown import PYTHON_GLUE
    times = dict(report["operations"])
    assert {"Conv2d direct", "Conv2d direct backward", "Conv2d im2col", "Linear",
            "Linear backward", "MaxPool2d", "MaxPool2d backward", "SGD step",
            PYTHON_GLUE} <= set(times)
    assert sum(times.values()) == pytest.approx(report["instrumented_step_ms"])
    assert all(ms >= 0 for ms in times.values()) and report["step_ms"] > 0


def test_an_inference_breakdown_sums_the_threads_the_batch_is_split_across():
    from benchmarks.breakdown import PYTHON_GLUE
    command = [sys.executable, "-m", "benchmarks.breakdown", "lenet5", "--worker", "minicnn",
               "--mode", "inference", "--batch", "64", "--repeat", "3", "--warmup", "1",
               "--threads", "2"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPOSITORY,
                            env=run.thread_environment(2), timeout=600)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    times = dict(report["operations"])
    assert report["threads"] == 2
    assert {"Conv2d direct", "MaxPool2d", "Linear"} <= set(times)
    assert not any(name.endswith("backward") for name in times)
    assert sum(times.values()) == pytest.approx(2 * report["instrumented_step_ms"])
    # both threads' operations were timed: together they fill more than one step
    in_operations = sum(ms for name, ms in times.items() if name != PYTHON_GLUE)
    assert in_operations > 1.1 * report["instrumented_step_ms"]


def test_the_breakdown_refuses_a_network_without_a_row():
    from benchmarks.breakdown import main
    with pytest.raises(SystemExit, match="no benchmark row is called 'lenet6'"):
        main(["lenet6"])
