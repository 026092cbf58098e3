"""The example scripts run as a reader would run them (a subprocess, from the repository
root), on a subset small enough for the default suite."""
import ast
import os
import subprocess
import sys

import pytest

from tests.test_cli import _mnist_cached

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LENET5_MNIST = os.path.join(ROOT, "examples", "train_lenet5_mnist.py")


def test_the_lenet5_example_uses_only_public_names():
    tree = ast.parse(open(LENET5_MNIST).read())
    imported = [alias.name for node in ast.walk(tree)
                if isinstance(node, (ast.Import, ast.ImportFrom)) for alias in node.names]
    modules = [node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    assert not [name for name in imported + modules if name.split(".")[-1].startswith("_")]
    assert len(open(LENET5_MNIST).read().splitlines()) <= 55      # one page


@pytest.mark.skipif(not _mnist_cached(), reason="MNIST is not in the cache")
def test_the_lenet5_example_learns_on_a_subset():
    environment = dict(os.environ, LIMIT="3000", EPOCHS="1", TARGET="0.65",
                       PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run([sys.executable, LENET5_MNIST], cwd=ROOT, env=environment,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-500:] + result.stderr[-2000:]
    assert "epoch 1/1  step 47/47" in result.stdout and "test accuracy" in result.stdout
