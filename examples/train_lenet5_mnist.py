"""LeNet-5 learns MNIST: the whole story on one page, with minicnn's public API only.

    python examples/train_lenet5_mnist.py                  # all 60,000 digits, 6 epochs
    LIMIT=3000 EPOCHS=1 TARGET=0.65 python examples/train_lenet5_mnist.py   # a quick check

The recipe is the command line's for LeNet-5 (``python -m architectures.lenet5 --train
mnist``): SGD with momentum 0.9, step 0.05 on a cosine down to 0, batches of 64.

LIMIT trains and tests on that many images of each set; the run fails (exit 1) below the
TARGET test accuracy, so a CI job can hold it to one.
"""
import os
import time

import architectures
from minicnn import functional as F, optim
from minicnn.data import DataLoader, load_dataset, transforms
from minicnn.tensor import Tensor
from minicnn.train import evaluate

LIMIT, EPOCHS = int(os.environ.get("LIMIT", 60_000)), int(os.environ.get("EPOCHS", 6))
TARGET = float(os.environ.get("TARGET", 0.98))

train_set, test_set = (data.subset(LIMIT, seed=0) for data in load_dataset("mnist"))
mean, std = train_set.channel_statistics()
# to float and normalised; training images also shifted by up to 2 pixels (more digits, free)
pipeline = lambda augment: transforms.pipeline(28, 1, 28, 1, mean, std, augment)  # noqa: E731
train_loader = DataLoader(train_set, batch_size=64, shuffle=True, seed=0,
                          transform=pipeline("translate"))
test_loader = DataLoader(test_set, batch_size=500, transform=pipeline("none"))

model = architectures.create("lenet5")          # 28×28 grey digits in, 10 classes out
optimizer = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
schedule = optim.CosineAnnealingLR(optimizer, T_max=EPOCHS, steps_per_epoch=len(train_loader))

for epoch in range(EPOCHS):
    started = time.perf_counter()
    model.train()
    for step, (images, labels) in enumerate(train_loader.batches(epoch)):
        loss = F.cross_entropy(model(Tensor(images)), labels)      # forward: builds the graph
        optimizer.zero_grad()
        loss.backward()                                             # d loss / d every weight
        optimizer.step()                                            # a step against it
        schedule.step()
        print(f"\repoch {epoch + 1}/{EPOCHS}  step {step + 1}/{len(train_loader)}  "
              f"loss {loss.item():.3f}", end="", flush=True)
    accuracy = evaluate(model, test_loader)["accuracy"]             # eval mode, no graph
    print(f"  test accuracy {100 * accuracy:.2f}%  ({time.perf_counter() - started:.0f} s)")

if accuracy < TARGET:
    raise SystemExit(f"test accuracy {accuracy:.4f} is below the target {TARGET}")
