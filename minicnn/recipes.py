"""How the papers trained: each family's published recipe in one readable table.

Half of several papers is *how* they trained. A ``Recipe`` states the paper's values as
the paper states them (its optimizer, step size and schedule, regularisation, training
augmentation and test-time evaluation), and ``settings(epochs)`` turns it into the
settings of a run of ``epochs`` epochs:

* a schedule given in epochs is scaled to the run's length: "×0.97 every 2.4 epochs" of a
  350-epoch run becomes ×0.97 every 2.4·E/350 epochs, so the learning rate at the end of
  the run is what the paper's was at the end of its run;
* "divide by 10 when the validation error stops improving" (AlexNet, VGG, ResNet: three
  times over the run) becomes a step schedule ×0.1 at 1/2, 3/4 and 7/8 of the run — a
  plateau cannot be waited for in a run this short, and this is where the papers'
  plateaus fell;
* batch sizes stay the family's default (the papers' 128–4096 on many GPUs or TPUs do not
  fit 2 cores); the learning rate is the paper's, scaled linearly by batch/paper batch.

Explicit command-line flags still win over a recipe (see minicnn.cli).
"""


class Recipe:
    """A paper's training recipe: ``values`` in the paper's own terms, and the citation."""

    def __init__(self, paper, epochs, batch_size, values, notes=""):
        self.paper, self.epochs, self.batch_size = paper, epochs, batch_size
        self.values, self.notes = values, notes

    def settings(self, epochs, batch_size):
        """The recipe scaled to a run of ``epochs`` epochs at ``batch_size``."""
        if epochs < 1 or batch_size < 1:
            raise ValueError(f"recipe: epochs and batch size must be >= 1, got {epochs}, "
                             f"{batch_size}")
        values = dict(self.values)
        values["lr"] = values["lr"] * batch_size / self.batch_size
        stretch = epochs / self.epochs
        kind = values.pop("schedule")
        if kind[0] == "plateau":                    # ×0.1 three times, where plateaus fell
            marks = sorted({max(1, round(epochs * f)) for f in (0.5, 0.75, 0.875)})
            values["schedule"] = "multistep:" + ",".join(str(m) for m in marks) + ":0.1"
        elif kind[0] == "decay":                    # ×γ every N epochs of the paper
            _, every, gamma = kind
            values["schedule"] = f"decay:{every * stretch:.4g}:{gamma}"
        elif kind[0] == "warmup-decay":             # linear warm-up, then ×γ every N epochs
            _, warmup, every, gamma = kind
            values["schedule"] = (f"warmup:{max(1, round(warmup * stretch))}"
                                  f"+decay:{every * stretch:.4g}:{gamma}")
        else:
            raise ValueError(f"recipe: unknown schedule kind {kind[0]!r}")
        return values

    def describe(self, name):
        lines = [f"{name}: {self.paper} ({self.epochs} epochs at batch {self.batch_size})"]
        width = max(len(k) for k in self.values)
        for key, value in self.values.items():
            lines.append(f"  {key.ljust(width)}  {value}")
        if self.notes:
            lines.append("  " + self.notes)
        return "\n".join(lines)


RECIPES = {
    "alexnet": Recipe(
        "Krizhevsky, Sutskever & Hinton 2012, §4–5", epochs=90, batch_size=128,
        values=dict(optimizer="sgd", lr=0.01, momentum=0.9, weight_decay=5e-4,
                    schedule=("plateau",), dropout=0.5,
                    augment="crop-flip (224 of 256) + PCA colour noise σ=0.1",
                    test="10crop"),
        notes="init: weights N(0, 0.01²), biases 1 in conv2, conv4, conv5 and the FC layers"),
    "vgg": Recipe(
        "Simonyan & Zisserman 2015, §3", epochs=74, batch_size=256,
        values=dict(optimizer="sgd", lr=0.01, momentum=0.9, weight_decay=5e-4,
                    schedule=("plateau",), dropout=0.5,
                    augment="scale jittering S ∈ [256, 512], 224 crops, flips, "
                            "PCA colour noise",
                    test="dense, Q ∈ {256, 384, 512}, flips"),
        notes="deeper configurations start from the trained VGG-11 (A) layers"),
    "resnet": Recipe(
        "He, Zhang, Ren & Sun 2016, §3.4", epochs=120, batch_size=256,
        values=dict(optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=1e-4,
                    schedule=("plateau",), dropout=0.0,
                    augment="scale augmentation S ∈ [256, 480], 224 crops, flips, "
                            "PCA colour noise",
                    test="10crop"),
        notes="600k iterations at batch 256 ≈ 120 epochs; no dropout"),
    "inception_v3": Recipe(
        "Szegedy et al. 2016, §8", epochs=100, batch_size=1600,
        values=dict(optimizer="rmsprop", lr=0.045, momentum=0.0, rmsprop_decay=0.9,
                    rmsprop_eps=1.0, weight_decay=4e-5, schedule=("decay", 2, 0.94),
                    label_smoothing=0.1, clip_grad_norm=2.0, dropout=0.2,
                    augment="crop-flip", test="none"),
        notes="batch 32 on each of 50 replicas; weight decay as in the reference code"),
    "efficientnet": Recipe(
        "Tan & Le 2019, §5.2", epochs=350, batch_size=4096,
        values=dict(optimizer="rmsprop", lr=0.256, momentum=0.9, rmsprop_decay=0.9,
                    rmsprop_eps=1e-3, weight_decay=1e-5, schedule=("decay", 2.4, 0.97),
                    bn_momentum=0.01, drop_path=0.2, dropout="0.2 (B0) → 0.5 (B7)",
                    augment="AutoAugment (RandAugment M=9 here)", test="none"),
        notes="BN momentum 0.99 in TensorFlow's convention is 0.01 in ours (and PyTorch's); "
              "survival probability 0.8 is drop-path 0.2"),
    "efficientnet_v2": Recipe(
        "Tan & Le 2021, §4 and Table 6", epochs=350, batch_size=4096,
        values=dict(optimizer="rmsprop", lr=0.256, momentum=0.9, rmsprop_decay=0.9,
                    rmsprop_eps=1e-3, weight_decay=1e-5,
                    schedule=("warmup-decay", 5, 2.4, 0.97), bn_momentum=0.01,
                    ema_decay=0.9999, drop_path=0.2,
                    progressive="4 stages; size, dropout, RandAugment, mixup as Table 6",
                    test="none"),
        notes="progressive learning: minicnn.progressive.EFFICIENTNET_V2_TABLE6"),
}


def recipe(family):
    """The family's paper recipe (ValueError naming the families that have one)."""
    if family not in RECIPES:
        raise ValueError(f"no paper recipe for {family!r}; recipes exist for "
                         f"{', '.join(sorted(RECIPES))}")
    return RECIPES[family]
