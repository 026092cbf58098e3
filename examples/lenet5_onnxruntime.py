"""A LeNet-5 trained by minicnn, exported to ONNX and run by onnxruntime on the MNIST test
set: both runtimes should get the same test accuracy from the same file of weights.

    python -m architectures.lenet5 --train mnist --epochs 1 --save /tmp/l5.npz
    python examples/lenet5_onnxruntime.py /tmp/l5.npz /tmp/l5.onnx

Needs the ``onnx`` extra and onnxruntime (``pip install minicnn[onnx] onnxruntime``).
"""
import argparse
import sys

import numpy as np


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="a minicnn training checkpoint (--save PATH)")
    parser.add_argument("onnx_file", help="where to write the exported network")
    parser.add_argument("--data-dir", help="folder holding the MNIST data")
    args = parser.parse_args(argv)

    import onnxruntime

    from minicnn import onnx as minicnn_onnx
    from minicnn.cli import build_model, make_pipeline
    from minicnn.data import load_dataset
    from minicnn.data.loader import DataLoader
    from minicnn.tensor import Tensor, no_grad
    from minicnn.train import load_training_checkpoint, restore

    state = load_training_checkpoint(args.checkpoint)
    meta = state["meta"]
    model = build_model(meta["architecture"], meta["num_classes"], meta["in_channels"], 0)
    restore(state, model)
    model.eval()
    input_shape = (meta["in_channels"], meta["input_size"], meta["input_size"])
    minicnn_onnx.export(model, args.onnx_file, input_shape)

    _, test_set = load_dataset(meta["dataset"], args.data_dir)
    loader = DataLoader(test_set, batch_size=500, transform=make_pipeline(meta, "none"))
    session = onnxruntime.InferenceSession(args.onnx_file, providers=["CPUExecutionProvider"])
    correct = {"minicnn": 0, "onnxruntime": 0}
    agree, largest_difference, seen = 0, 0.0, 0
    for images, labels in loader.batches(0):
        with no_grad():
            ours = model(Tensor(images)).numpy()
        theirs = session.run(None, {"input": images})[0]
        correct["minicnn"] += int((ours.argmax(1) == labels).sum())
        correct["onnxruntime"] += int((theirs.argmax(1) == labels).sum())
        agree += int((ours.argmax(1) == theirs.argmax(1)).sum())
        largest_difference = max(largest_difference,
                                 float(np.abs(ours - theirs).max() / np.abs(ours).max()))
        seen += len(labels)
    print(f"{meta['architecture']} exported to {args.onnx_file} (input {input_shape}, "
          f"any batch size)")
    for runtime, hits in correct.items():
        print(f"  {runtime:12s} test accuracy {100 * hits / seen:.2f}%  ({seen:,} images)")
    print(f"  same prediction on {agree:,} of {seen:,} images; largest relative logit "
          f"difference {largest_difference:.1e}")
    return 0 if correct["minicnn"] == correct["onnxruntime"] else 1


if __name__ == "__main__":
    sys.exit(main())
