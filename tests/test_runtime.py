"""minicnn/runtime.py: the two process settings applied when minicnn is imported."""
import os
import platform
import subprocess
import sys

import pytest

from minicnn import runtime


def python_with(code, **environment):
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_WAIT_POLICY", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")}
    env.update(environment)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, check=True).stdout.strip()


def test_importing_minicnn_makes_openmp_threads_wait_passively():
    code = "import os, minicnn; print(os.environ['OMP_WAIT_POLICY'])"
    assert python_with(code) == "PASSIVE"


def test_a_wait_policy_the_user_set_wins():
    code = "import os, minicnn; print(os.environ['OMP_WAIT_POLICY'])"
    assert python_with(code, OMP_WAIT_POLICY="ACTIVE") == "ACTIVE"


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                    reason="mallopt tuning is glibc's")
def test_glibc_agrees_to_keep_freed_memory():
    assert python_with("from minicnn import runtime; print(runtime.keep_freed_memory())") == "True"


def test_malloc_settings_the_user_set_win(monkeypatch):
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "131072")
    assert runtime.keep_freed_memory() is False
