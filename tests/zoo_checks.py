"""Checks every architecture test shares: exact parameter counts, output shapes at the
published size, and a small training run at reduced size."""
import numpy as np

import architectures
from minicnn import Tensor, no_grad, functional as F
from minicnn.optim import SGD


def count(name, **options):
    model = architectures.create(name, **options)
    return model.num_parameters()


def assert_parameter_count(name, expected, **options):
    got = count(name, **options)
    assert got == expected, f"{name}: {got:,} parameters, published {expected:,}"


def assert_output_shape(model, input_size, num_classes, in_channels=3):
    """Batch-1 forward at the published input size under no_grad, in eval mode."""
    model.eval()
    x = Tensor(np.zeros((1, in_channels, input_size, input_size), np.float32))
    with no_grad():
        y = model(x)
    y = y[0] if isinstance(y, tuple) else y
    assert y.shape == (1, num_classes), f"output shape {y.shape}, expected (1, {num_classes})"


def assert_trains(model, input_size, batch=4, steps=4, lr=0.01, seed=0, in_channels=1,
                  num_classes=10, loss_fn=None):
    """Forward/backward on a fixed small batch: every parameter gets a non-zero gradient
    on the first step, and the loss after ``steps`` SGD steps is below the first loss."""
    rng = np.random.default_rng(seed)
    x = Tensor(rng.standard_normal((batch, in_channels, input_size, input_size)).astype(np.float32))
    labels = rng.integers(0, num_classes, batch)
    model.train()
    optimizer = SGD(list(model.parameters()), lr=lr, momentum=0.9)

    def loss_of(output):
        if loss_fn is not None:
            return loss_fn(output, labels)
        if isinstance(output, tuple):  # main logits + auxiliary logits
            return sum((F.cross_entropy(o, labels) * (1.0 if i == 0 else 0.3)
                        for i, o in enumerate(output)), Tensor(np.float32(0)))
        return F.cross_entropy(output, labels)

    losses = []
    for step in range(steps):
        optimizer.zero_grad()
        loss = loss_of(model(x))
        loss.backward()
        if step == 0:
            no_grad_names = [n for n, p in model.named_parameters()
                             if p.grad is None or not np.any(p.grad)]
            assert not no_grad_names, f"parameters without gradient: {no_grad_names[:10]}"
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0], f"loss did not fall: {losses}"
    return losses
