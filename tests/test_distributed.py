"""minicnn.distributed: data parallelism, synchronized batch norm, AlexNet's towers on two
ranks, and what happens when a rank dies.

Two kinds of test:

* in this process, without MPI: sharding arithmetic, statistics combination, gradient
  buckets, SyncBatchNorm on one rank against batch norm, bad input;
* under ``mpiexec -n 2`` (scripts in tests/mpi_scripts/, run with a wall-clock limit):
  training equivalence with one process and twice the batch (LeNet-5; a batch-norm network
  with SyncBatchNorm), sharding on real ranks, the two-tower AlexNet against the grouped
  model, and a rank that exits, hangs or raises.

The MPI tests are skipped, with the reason, when mpi4py or mpiexec is missing.
"""
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import OrderedDict

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from minicnn import Tensor, distributed, functional as F, gradcheck, nn
from minicnn.distributed import data_parallel, sync_batchnorm
from minicnn.distributed.comm import SingleProcess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = os.path.join(ROOT, "tests", "mpi_scripts")
MPIEXEC = shutil.which("mpiexec") or shutil.which("mpirun")
HAVE_MPI4PY = importlib.util.find_spec("mpi4py") is not None

needs_mpi = pytest.mark.skipif(
    not (HAVE_MPI4PY and MPIEXEC),
    reason="needs mpi4py and mpiexec: pip install 'minicnn[distributed]'")


# ----------------------------------------------------------------------------- running MPI

class Launch:
    def __init__(self, returncode, output, seconds):
        self.returncode, self.output, self.seconds = returncode, output, seconds

    def result(self):
        """The JSON of the ``RESULT`` line rank 0 printed."""
        for line in self.output.splitlines():
            if line.startswith("RESULT "):
                return json.loads(line[len("RESULT "):])
        raise AssertionError(f"no RESULT line; exit status {self.returncode}, output:\n"
                             f"{self.output}")


def run_mpi(script, *arguments, ranks=2, limit=120, launcher_options=()):
    """Run ``tests/mpi_scripts/<script>`` on ``ranks`` ranks; kill the whole launch (its
    process group) past ``limit`` seconds. One Numba/BLAS thread per rank: the ranks
    share this machine's cores."""
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               MKL_NUM_THREADS="1", NUMBA_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    command = [MPIEXEC, *launcher_options, "-n", str(ranks), sys.executable,
               os.path.join(SCRIPTS, script), *map(str, arguments)]
    started = time.monotonic()
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = process.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f"{script} {' '.join(map(str, arguments))} still running after {limit} s "
                    f"(a hang); output:\n{output}")
    return Launch(process.returncode, output, time.monotonic() - started)


@pytest.fixture(scope="module")
def data_parallel_results():
    launch = run_mpi("data_parallel_training.py")
    assert launch.returncode == 0, launch.output
    return launch.result()


# ----------------------------------------------------------------------------- data parallel

@needs_mpi
@pytest.mark.mpi
@pytest.mark.parametrize("network", ["lenet5", "syncbn"])
def test_two_ranks_with_batch_b_train_like_one_process_with_batch_2b(
        data_parallel_results, network):
    """k = 4 SGD steps (momentum, weight decay; 2 epochs, reshuffled), float64: the
    replicas agree exactly and equal the single process to rounding."""
    result = data_parallel_results[network]
    assert result["replicas_differ"] == 0.0
    assert result["moved"] > 1e-2                   # training did change the weights
    assert result["max_difference"] < 1e-12, result
    if network == "lenet5":
        assert result["buckets"] > 3                 # gradients went in several allreduces
    if network == "syncbn":
        assert result["sync_layers"] == 2           # both BatchNorm2d were converted


@needs_mpi
@pytest.mark.mpi
def test_shards_cover_every_index_once_per_epoch_on_real_ranks(data_parallel_results):
    sharding = data_parallel_results["sharding"]
    for key in ("24-pad", "25-uneven"):
        for counts in sharding[key]:
            assert counts == [1] * len(counts), (key, counts)
    for counts in sharding["25-pad"]:                # padded: one index twice
        assert min(counts) == 1 and sum(counts) == 26
    for counts in sharding["25-drop"]:               # dropped: one index left out
        assert max(counts) == 1 and sum(counts) == 24
    # a different shuffle every epoch: the padded duplicate moves
    assert len({tuple(c) for c in sharding["25-pad"]}) > 1


@needs_mpi
@pytest.mark.mpi
def test_metrics_are_weighted_by_each_rank_count(data_parallel_results):
    metrics = data_parallel_results["metrics"]
    assert metrics["loss"] == pytest.approx((3 * 1 + 4 * 2) / 7)
    assert metrics["top5"] is None


# ----------------------------------------------------------------------------- model parallel

@needs_mpi
@pytest.mark.mpi
def test_two_tower_alexnet_on_two_ranks_equals_grouped_model():
    """Full-width AlexNet at 67×67, float32: logits, input gradient and every weight
    gradient of each tower equal the grouped single-process model's."""
    launch = run_mpi("model_parallel_alexnet.py", limit=240)
    assert launch.returncode == 0, launch.output
    result = launch.result()
    for tower in ("tower0", "tower1"):
        r = result[tower]
        assert r["logits_shape"] == [2, 10]
        assert r["weights"] == 0.0                   # the tower holds its rows, exactly
        assert r["logits"] < 1e-5 and r["input_gradient"] < 1e-5, r
        gradients = {k: v for k, v in r.items() if k.startswith("grad ")}
        assert len(gradients) == 16                  # 5 convolutions + 3 linear, w and b
        assert max(gradients.values()) < 1e-5, gradients
    # the two towers split AlexNet's 60,965,224 parameters (10 classes here) between them
    assert result["tower0"]["tower_parameters"] + result["tower1"]["tower_parameters"] \
        == 56_909_194


# ----------------------------------------------------------------------------- failures

FAILURE_TIMEOUT = 10    # seconds a rank waits in a collective (MINICNN_DIST_TIMEOUT); room for a slow start


@needs_mpi
@pytest.mark.mpi
def test_a_hanging_rank_ends_the_job_with_a_timeout_error():
    launch = run_mpi("rank_failure.py", "hang", FAILURE_TIMEOUT, limit=60)
    assert launch.returncode != 0
    assert "DistributedTimeout" in launch.output
    assert f"rank 0 of 2: allreduce of the gradients did not complete within {FAILURE_TIMEOUT} s" \
        in launch.output
    assert "aborting every rank" in launch.output
    assert launch.seconds < 45, launch.seconds      # not rank 1's 600 s of sleep


@needs_mpi
@pytest.mark.mpi
def test_an_exception_on_one_rank_aborts_all_with_its_rank():
    launch = run_mpi("rank_failure.py", "raise", FAILURE_TIMEOUT, limit=60)
    assert launch.returncode != 0
    assert "RuntimeError: rank 1 broke on purpose" in launch.output
    assert "rank 1 of 2 stopped with RuntimeError; aborting every rank" in launch.output
    assert "finished" not in launch.output


@needs_mpi
@pytest.mark.mpi
def test_a_rank_that_exits_early_is_noticed_at_once():
    """``sys.exit`` on rank 1: it says goodbye as it leaves, and rank 0 stops waiting."""
    launch = run_mpi("rank_failure.py", "leave", 60, limit=60)
    assert launch.returncode != 0
    assert "rank 0 of 2: rank 1 has left the job" in launch.output
    assert "while this rank waited for allreduce of the gradients" in launch.output
    assert launch.seconds < 30, launch.seconds      # long before the 60 s deadline


@needs_mpi
@pytest.mark.mpi
def test_a_killed_rank_ends_the_job_within_the_bound():
    """Default launch: MPICH's launcher kills the survivors as soon as a rank exits
    without finalizing, and reports the dead rank's status."""
    launch = run_mpi("rank_failure.py", "exit", FAILURE_TIMEOUT, limit=60)
    assert launch.returncode != 0
    assert "rank 1: failing (exit)" in launch.output
    assert "finished" not in launch.output
    assert launch.seconds < 45, launch.seconds


@needs_mpi
@pytest.mark.mpi
def test_a_killed_rank_without_launcher_cleanup_times_out_clearly():
    """With ``-disable-auto-cleanup`` nothing kills rank 0 for us: the deadline does."""
    launch = run_mpi("rank_failure.py", "exit", FAILURE_TIMEOUT, limit=60,
                     launcher_options=("-disable-auto-cleanup",))
    assert launch.returncode != 0
    assert f"did not complete within {FAILURE_TIMEOUT} s" in launch.output
    assert "finished" not in launch.output
    assert launch.seconds < 45, launch.seconds


# ----------------------------------------------------------------------------- the command line

def _cli_has_distributed():
    with open(os.path.join(ROOT, "minicnn", "cli", "parser.py"), encoding="utf-8") as source:
        return '"--distributed"' in source.read()


@needs_mpi
@pytest.mark.mpi
@pytest.mark.skipif(not _cli_has_distributed(), reason="minicnn.cli has no --distributed yet")
def test_command_line_trains_on_two_ranks_and_only_rank_0_speaks(tmp_path):
    """``mpirun -np 2 python -m architectures.lenet5 --train FOLDER --distributed`` on a
    small generated image folder: one epoch, one set of lines, one checkpoint."""
    from PIL import Image
    rng = np.random.default_rng(0)
    for label in ("dark", "light"):
        os.makedirs(tmp_path / "images" / label)
        for index in range(20):
            level = 60 if label == "dark" else 190
            pixels = np.clip(rng.normal(level, 30, size=(28, 28, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(tmp_path / "images" / label / f"{index}.png")
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               NUMBA_NUM_THREADS="1", MINICNN_DATA=str(tmp_path / "cache"),
               PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    command = [MPIEXEC, "-n", "2", sys.executable, "-m", "architectures.lenet5", "--train",
               str(tmp_path / "images"), "--distributed", "--epochs", "1", "--batch-size", "4",
               "--save", str(tmp_path / "run.npz")]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("data parallel: 2 ranks x 4 images = 8 per step") == 1
    assert done.stdout.count("epoch 1/1") == 1, done.stdout
    assert (tmp_path / "run.npz").exists() and (tmp_path / "run.history.json").exists()


# ----------------------------------------------------------------------------- sharding, no MPI

@given(st.integers(1, 60), st.integers(1, 5), st.integers(0, 10**6),
       st.sampled_from(data_parallel.REMAINDERS))
def test_shards_partition_the_order(count, size, seed, remainder):
    order = np.random.default_rng(seed).permutation(count)
    shards = [data_parallel.shard_indices(order, r, size, remainder) for r in range(size)]
    seen = np.bincount(np.concatenate(shards), minlength=count)
    if remainder == "uneven":
        assert (seen == 1).all()
        assert max(map(len, shards)) - min(map(len, shards)) <= 1
    else:
        assert len({len(s) for s in shards}) == 1   # every rank takes as many steps
    if remainder == "pad":
        assert seen.min() >= 1 and seen.sum() == size * -(-count // size)
        if count >= size:
            assert seen.max() <= 2
    if remainder == "drop":
        assert seen.max() <= 1 and seen.sum() == count - count % size
    for r in range(size):                            # sampler length agrees
        sampler = distributed.DistributedSampler(count, r, size, seed=seed, remainder=remainder)
        assert len(sampler.indices(3)) == len(sampler)


def test_strided_shards_make_the_global_batch_of_one_process():
    """Per-rank batch B at step k, all ranks together = samples [k·P·B, (k+1)·P·B)."""
    order = np.random.default_rng(0).permutation(48)
    size, batch = 3, 4
    shards = [data_parallel.shard_indices(order, r, size) for r in range(size)]
    for step in range(4):
        together = np.concatenate([s[step * batch:(step + 1) * batch] for s in shards])
        assert sorted(together) == sorted(order[step * size * batch:(step + 1) * size * batch])


def test_distributed_loader_serves_only_its_shard():
    from minicnn.data.loader import DataLoader
    images = np.arange(20, dtype=np.float32).reshape(20, 1)
    loader = DataLoader((images, np.arange(20)), batch_size=3, shuffle=True, seed=1)
    parts = [data_parallel.DistributedLoader(loader, r, 2) for r in range(2)]
    assert [len(p) for p in parts] == [4, 4]        # 10 samples each, batches 3+3+3+1
    labels = [np.concatenate([y for _, y in p.batches(2)]) for p in parts]
    assert sorted(np.concatenate(labels)) == list(range(20))
    assert (np.concatenate(labels) == np.concatenate(
        [loader.order(2)[0::2], loader.order(2)[1::2]])).all()


def test_sampler_rejects_bad_input():
    with pytest.raises(ValueError, match="rank must be in"):
        distributed.DistributedSampler(10, 2, 2)
    with pytest.raises(ValueError, match="remainder must be one of"):
        distributed.DistributedSampler(10, 0, 2, remainder="spread")
    with pytest.raises(ValueError, match="at least one sample"):
        distributed.DistributedSampler(0, 0, 2)


# ----------------------------------------------------------------------------- buckets, no MPI

class MirrorRanks(SingleProcess):
    """Pretends to be ``size`` ranks that all hold this rank's arrays: a sum over ranks is
    ``size`` times the array. Enough to check packing, scaling and the has-grad counts."""

    def __init__(self, size):
        self.size = size
        self.calls = []

    def allreduce_many_(self, arrays, what="allreduce", timeout=None):
        self.calls.append([a.size for a in arrays])
        for a in arrays:
            a *= self.size
        return arrays


def test_gradient_buckets_average_and_keep_missing_gradients_missing():
    model = nn.Sequential(nn.Linear(50, 40), nn.ReLU(), nn.Linear(40, 30), nn.Linear(30, 2))
    x = Tensor(np.random.default_rng(0).normal(size=(5, 50)).astype(np.float32))
    F.sum(model[2](model[1](model[0](x)))).backward()      # the last layer stays unused
    before = [None if p.grad is None else p.grad.copy() for p in model.parameters()]
    ranks = MirrorRanks(4)
    buckets = data_parallel.GradientBuckets(list(model.parameters()), bucket_bytes=4096)
    stop = buckets.average(ranks, ranks.size, stop_requested=False)
    assert stop is False
    assert len(ranks.calls) == 1 and len(ranks.calls[0]) == len(buckets.buckets) > 2
    for p, old in zip(model.parameters(), before):
        if old is None:
            assert p.grad is None                   # as in one process: the optimizer skips it
        else:
            np.testing.assert_array_equal(p.grad, old)   # (4 × g) / 4
            assert p.grad.dtype == np.float32
    assert buckets.average(ranks, ranks.size, stop_requested=True) is True


def test_one_process_data_parallel_changes_nothing():
    model = nn.Linear(3, 2)
    model.weight.grad = np.ones((2, 3), np.float32)
    dp = distributed.DataParallel(model, SingleProcess()).prepare()
    assert dp.after_backward() is False and dp.after_backward(True) is True
    np.testing.assert_array_equal(model.weight.grad, 1.0)
    assert dp.reduce_means({"loss": 0.5, "top5": None}, 10) == {"loss": 0.5, "top5": None}
    with pytest.raises(ValueError, match="bucket_mb must be positive"):
        distributed.DataParallel(model, SingleProcess(), bucket_mb=0)


def test_generators_get_a_stream_per_rank_that_resumes_exactly():
    a, b = np.random.default_rng(5), np.random.default_rng(5)
    data_parallel.decorrelate_generators([b], rank=1)
    assert a.random() != b.random()
    # jump then draw == draw then jump: resuming from rank 0's state and jumping again
    # lands rank 1 where it would have been
    g = np.random.default_rng(9)
    g.random(7)
    saved = g.bit_generator.state
    h = np.random.default_rng(9)
    data_parallel.decorrelate_generators([h], rank=1)
    h.random(7)
    resumed = np.random.default_rng()
    resumed.bit_generator.state = saved
    data_parallel.decorrelate_generators([resumed], rank=1)
    assert resumed.random() == h.random()


# ---------------------------------------------------------------------------- SyncBatchNorm, no MPI

@given(st.lists(st.integers(1, 6), min_size=1, max_size=4), st.integers(0, 10**6))
def test_combined_statistics_equal_those_of_the_union(counts, seed):
    rng = np.random.default_rng(seed)
    parts = [rng.normal(loc=rng.normal() * 100, size=(n, 3)) for n in counts]
    total, mean, var = sync_batchnorm.combine_statistics(
        np.array(counts), np.stack([p.mean(0) for p in parts]),
        np.stack([p.var(0) for p in parts]))
    union = np.concatenate(parts)
    assert total == len(union)
    np.testing.assert_allclose(mean, union.mean(0), rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(var, union.var(0), rtol=1e-9, atol=1e-9)


@settings(deadline=None)
@given(st.sampled_from([(4, 3, 5, 5), (6, 4), (3, 2, 7)]), st.integers(0, 10**6))
def test_sync_batch_norm_on_one_rank_is_batch_norm(shape, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=shape) * 3 + 1
    gamma, beta, gy = rng.normal(size=shape[1]), rng.normal(size=shape[1]), rng.normal(size=shape)
    results = []
    for function in ("plain", "sync"):
        running_mean, running_var = np.zeros(shape[1]), np.ones(shape[1])
        xt, gt, bt = Tensor(x, requires_grad=True), Tensor(gamma, requires_grad=True), \
            Tensor(beta, requires_grad=True)
        if function == "plain":
            y = F.batch_norm(xt, running_mean, running_var, gt, bt, training=True)
        else:
            y = sync_batchnorm.sync_batch_norm(xt, running_mean, running_var, gt, bt,
                                               communicator=SingleProcess())
        y.backward(gy)
        results.append([y.data, xt.grad, gt.grad, bt.grad, running_mean, running_var])
    for plain, sync in zip(*results):
        np.testing.assert_allclose(sync, plain, rtol=1e-10, atol=1e-12)


def test_sync_batch_norm_gradient_matches_finite_differences():
    rng = np.random.default_rng(3)
    x = Tensor(rng.normal(size=(3, 2, 2, 3)), requires_grad=True)
    gamma = Tensor(rng.normal(size=2) + 1.5, requires_grad=True)
    beta = Tensor(rng.normal(size=2), requires_grad=True)
    weights = Tensor(rng.normal(size=(3, 2, 2, 3)))
    assert gradcheck(lambda x, g, b: F.sum(sync_batchnorm.sync_batch_norm(
        x, None, None, g, b, communicator=SingleProcess()) * weights), [x, gamma, beta])


def test_convert_sync_batchnorm_keeps_parameters_buffers_and_order():
    model = nn.Sequential(OrderedDict(
        conv=nn.Conv2d(1, 3, 3), bn=nn.BatchNorm2d(3), relu=nn.ReLU(),
        flatten=nn.Flatten(), fc=nn.Linear(3, 4), bn1=nn.BatchNorm1d(4)))
    model.eval()
    old_bn, old_bn1 = model.bn, model.bn1
    names_before = [n for n, _ in model.named_parameters()]
    distributed.convert_sync_batchnorm(model, SingleProcess())
    assert isinstance(model.bn, distributed.SyncBatchNorm2d)
    assert isinstance(model.bn, nn.BatchNorm2d)          # still a BatchNorm2d for every tool
    assert isinstance(model.bn1, distributed.SyncBatchNorm1d)
    assert model.bn.weight is old_bn.weight and model.bn.running_var is old_bn.running_var
    assert model.bn1.bias is old_bn1.bias and model.bn1.running_mean is old_bn1.running_mean
    assert [n for n, _ in model.named_parameters()] == names_before
    assert list(model._modules) == ["conv", "bn", "relu", "flatten", "fc", "bn1"]
    assert model.bn.training is False
    with pytest.raises(ValueError, match=r"SyncBatchNorm2d\(3\): expected input of rank 4"):
        model.bn.train()(Tensor(np.zeros((2, 4, 3, 3), np.float32)))


def test_sync_batch_norm_rejects_bad_input():
    with pytest.raises(ValueError, match="rank 2 or more"):
        sync_batchnorm.sync_batch_norm(Tensor(np.zeros(3)), None, None,
                                       communicator=SingleProcess())
    with pytest.raises(TypeError, match="floating-point"):
        sync_batchnorm.sync_batch_norm(Tensor(np.zeros((2, 3), np.int64)), None, None,
                                       communicator=SingleProcess())
    with pytest.raises(ValueError, match="more than one value per channel"):
        sync_batchnorm.sync_batch_norm(Tensor(np.zeros((1, 3))), None, None,
                                       communicator=SingleProcess())


# ----------------------------------------------------------------------------- the rest, no MPI

def test_without_init_the_world_is_one_process():
    assert distributed.world().size == 1 and distributed.is_main_process()


def test_timeout_setting_is_checked(monkeypatch):
    from minicnn.distributed import comm
    monkeypatch.setenv(comm.TIMEOUT_VARIABLE, "2.5")
    assert comm.default_timeout() == 2.5
    monkeypatch.setenv(comm.TIMEOUT_VARIABLE, "soon")
    with pytest.raises(ValueError, match="MINICNN_DIST_TIMEOUT must be a positive number"):
        comm.default_timeout()


def test_model_parallel_needs_a_two_tower_alexnet():
    from architectures.alexnet import ModelParallelAlexNet
    with pytest.raises(ValueError, match="needs a two-tower AlexNet"):
        ModelParallelAlexNet(nn.Linear(2, 2), SingleProcess())


@pytest.mark.gpu
def test_nccl_reducer_is_used_only_with_a_gpu():
    from minicnn.distributed import nccl
    from minicnn.backend import gpu_available
    if not gpu_available():
        assert nccl.available() is False
        pytest.skip("no CUDA GPU: the NCCL path cannot run here")
    import cupy
    if cupy.cuda.runtime.getDeviceCount() < 2:
        pytest.skip("NCCL over two ranks needs two GPUs (two ranks may not share one)")
    launch = run_mpi("nccl_allreduce.py", limit=120)
    assert launch.returncode == 0, launch.output
    assert launch.result() == {"sums": [[1.0, 3.0, 5.0], [1.0, 3.0, 5.0]]}
