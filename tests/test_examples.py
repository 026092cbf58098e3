"""The example scripts and the experiments run as a reader would run them (a subprocess,
from the repository root, or their main() with a few images), on subsets small enough."""
import ast
import importlib
import json
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


EXPERIMENTS = sorted(name[:-3] for name in os.listdir(os.path.join(ROOT, "experiments"))
                     if name.endswith(".py") and name != "__init__.py")


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_each_experiment_imports_and_states_its_options(name, capsys):
    """The README quotes these commands: a module that moved must not leave one unrunnable
    (recipes_tta once imported convolutionize from where it no longer was)."""
    module = importlib.import_module(f"experiments.{name}")
    with pytest.raises(SystemExit) as exit_:
        module.main(["--help"])
    assert exit_.value.code == 0
    assert "usage:" in capsys.readouterr().out


NEEDS_MNIST = pytest.mark.skipif(not _mnist_cached(), reason="MNIST is not in the cache")
TINY_RUNS = [   # (experiment, its arguments, marks)
    ("recipes_progressive", ["--dataset", "cluttered", "--train", "128", "--test", "50",
                             "--epochs", "1", "--progressive-epochs", "2", "--stages", "2",
                             "--sizes", "40", "44", "--batch-size", "64",
                             "--head-init", "imagenet"], NEEDS_MNIST),
    ("recipes_progressive", ["--dataset", "shapes", "--train", "40", "--test", "20",
                             "--epochs", "1", "--progressive-epochs", "2", "--stages", "2",
                             "--sizes", "40", "44", "--batch-size", "20"], ()),
    ("recipes_tta", ["--arch", "vgg", "--train", "128", "--test", "20", "--epochs", "1"],
     NEEDS_MNIST),
]


@pytest.mark.slow
@pytest.mark.parametrize("name, arguments", [
    pytest.param(name, arguments, marks=marks, id=f"{name}-{arguments[1]}")
    for name, arguments, marks in TINY_RUNS])
def test_each_training_experiment_runs_end_to_end_on_a_few_images(name, arguments, tmp_path):
    out = tmp_path / f"{name}.json"
    importlib.import_module(f"experiments.{name}").main(arguments + ["--out", str(out)])
    results = json.loads(out.read_text())
    scores = ([arm["test_accuracy"] for arm in results["arms"].values()]
              if "arms" in results else list(results["accuracy"].values()))
    assert scores and all(0.0 <= score <= 1.0 for score in scores)


def test_the_progressive_experiment_refuses_a_gpu_it_cannot_see_before_any_work(capsys):
    from minicnn.backend import gpu_available
    if gpu_available():
        pytest.skip("this machine has a GPU")
    from experiments import recipes_progressive
    with pytest.raises(SystemExit) as exit_:
        recipes_progressive.main(["--dataset", "shapes", "--device", "gpu"])
    assert exit_.value.code == 2
    assert "--device gpu: no CUDA GPU with CuPy is available here" in capsys.readouterr().err
