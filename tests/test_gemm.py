"""``minicnn.kernels.threads.gemm``: inside ``kernel_threads_only`` (a training step, an
evaluation) the convolutions' GEMMs are cut into one share per thread, BLAS single-threaded
on each; they give NumPy's product for every shape they are cut by, and the scope leaves
BLAS's thread count as it found it. Outside the scope a GEMM is NumPy's."""
import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from minicnn.kernels import threads as threads_module
from minicnn.kernels.threads import gemm


@pytest.fixture
def always_split(monkeypatch):
    """Every GEMM, however small, cut into as many shares as there are threads."""
    monkeypatch.setattr(threads_module, "GEMM_OWN_THREADS_MIN_WORK", 0)
    monkeypatch.setattr(threads_module, "MIN_WORK_PER_THREAD", 1)
    with threads_module.kernel_threads_only():
        yield


def _operands(rng, batch, m, k, n, b_batched):
    a = rng.standard_normal(((batch,) if batch else ()) + (m, k)).astype(np.float32)
    b = rng.standard_normal(((batch,) if batch and b_batched else ()) + (k, n)).astype(np.float32)
    return a, b


@settings(deadline=None, max_examples=40,
          suppress_health_check=[HealthCheck.function_scoped_fixture])   # it never changes
@given(batch=st.integers(0, 5), m=st.integers(1, 9), k=st.integers(1, 7), n=st.integers(1, 9),
       b_batched=st.booleans(), transpose_a=st.booleans(), seed=st.integers(0, 2 ** 16))
def test_gemm_equals_numpy_however_it_is_cut(always_split, batch, m, k, n, b_batched,
                                              transpose_a, seed):
    rng = np.random.default_rng(seed)
    a, b = _operands(rng, batch, m, k, n, b_batched)
    if transpose_a:            # the convolutions pass transposed views (gyᵀ @ cols)
        a = np.ascontiguousarray(np.swapaxes(a, -1, -2)).swapaxes(-1, -2)
    np.testing.assert_allclose(gemm(a, b), np.matmul(a, b), rtol=1e-5, atol=1e-5)


def test_gemm_writes_into_a_slice_of_a_larger_array(always_split):
    rng = np.random.default_rng(1)
    a, b = _operands(rng, 0, 6, 5, 11, False)
    whole = np.full((20, 11), np.nan, dtype=np.float32)
    assert gemm(a, b, out=whole[7:13]) is not None
    np.testing.assert_allclose(whole[7:13], a @ b, rtol=1e-5, atol=1e-5)
    assert np.isnan(whole[:7]).all() and np.isnan(whole[13:]).all()


def _record_matmul_threads(monkeypatch, controllers):
    """np.matmul, recording the thread of each call and BLAS's thread counts during it."""
    seen, during = set(), []
    matmul = np.matmul

    def recording_matmul(*args, **kwargs):
        seen.add(threading.get_ident())
        during.append([c.get_num_threads() for c in controllers])
        return matmul(*args, **kwargs)
    monkeypatch.setattr(np, "matmul", recording_matmul)
    return seen, during


def test_inside_the_scope_shares_run_on_several_threads_blas_single(monkeypatch):
    monkeypatch.setattr(threads_module, "GEMM_OWN_THREADS_MIN_WORK", 0)
    monkeypatch.setattr(threads_module, "MIN_WORK_PER_THREAD", 1)
    controllers = threads_module._blas_controllers()
    before = [c.get_num_threads() for c in controllers]
    seen, during = _record_matmul_threads(monkeypatch, controllers)
    a, b = _operands(np.random.default_rng(2), 0, 64, 8, 4, False)
    with threads_module.kernel_threads_only():
        np.testing.assert_allclose(gemm(a, b), a @ b, rtol=1e-5, atol=1e-5)
    assert len(seen) == min(threads_module.thread_count(), threads_module.pool_size() + 1)
    assert all(counts == [1] * len(controllers) for counts in during)
    assert [c.get_num_threads() for c in controllers] == before


def test_outside_the_scope_a_gemm_is_numpys(monkeypatch):
    monkeypatch.setattr(threads_module, "GEMM_OWN_THREADS_MIN_WORK", 0)
    monkeypatch.setattr(threads_module, "MIN_WORK_PER_THREAD", 1)
    controllers = threads_module._blas_controllers()
    seen, during = _record_matmul_threads(monkeypatch, controllers)
    a, b = _operands(np.random.default_rng(3), 0, 64, 8, 4, False)
    np.testing.assert_allclose(gemm(a, b), a @ b, rtol=1e-5, atol=1e-5)
    assert seen == {threading.get_ident()} and len(during) == 1


def test_small_gemms_are_not_cut(monkeypatch):
    """Below GEMM_OWN_THREADS_MIN_WORK no share is handed to a thread."""
    monkeypatch.setattr(threads_module, "over_blocks",
                        lambda *args, **kwargs: pytest.fail("a small GEMM was cut"))
    a, b = np.ones((8, 8), np.float32), np.ones((8, 8), np.float32)
    with threads_module.kernel_threads_only():
        np.testing.assert_array_equal(gemm(a, b), np.full((8, 8), 8, np.float32))


def test_a_training_step_runs_in_the_scope(monkeypatch):
    """minicnn.train.train_step holds BLAS single-threaded while it runs."""
    from minicnn import Tensor, nn, optim
    from minicnn.train import train_step
    controllers = threads_module._blas_controllers()
    before = [c.get_num_threads() for c in controllers]
    counts = []
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    forward = model.forward

    def recording_forward(x):
        counts.append([c.get_num_threads() for c in controllers])
        return forward(x)
    monkeypatch.setattr(model, "forward", recording_forward)
    x = np.random.default_rng(4).standard_normal((4, 3, 2, 2)).astype(np.float32)
    x = Tensor(x, requires_grad=True)           # the whole batch at once, not in shares
    train_step(model, optim.SGD(model.parameters(), lr=0.1), x, np.array([0, 1, 2, 0]))
    assert counts and all(c == [1] * len(controllers) for c in counts)
    assert [c.get_num_threads() for c in controllers] == before
