"""How the papers trained: each family's published recipe in one readable table.

Half of several papers is *how* they trained. A ``Recipe`` states the paper's values as
the paper states them (its optimizer, step size and schedule, regularisation, training
augmentation and test-time evaluation), and ``settings(epochs)`` turns it into the
settings of a run of ``epochs`` epochs:

* a schedule given in epochs is scaled to the run's length: "×0.97 every 2.4 epochs" of a
  350-epoch run becomes ×0.97 every 2.4·E/350 epochs, so the learning rate at the end of
  the run is what the paper's was at the end of its run;
* a schedule at fixed epochs (DenseNet's ×0.1 at 30 and 60 of 90) moves its milestones
  by the same factor E/paper epochs (rounded, at least epoch 1);
* "divide by 10 when the validation error stops improving" (AlexNet, VGG, ResNet: three
  times over the run) becomes a step schedule ×0.1 at 1/2, 3/4 and 7/8 of the run: a
  plateau cannot be waited for in a run this short. ResNet's CIFAR schedule, the one that
  gives its iterations, drops at 1/2 and 3/4; the ImageNet papers do not say when theirs
  fell, and the third drop at 7/8 leaves a last eighth at the smallest rate;
* warm-up epochs are stretched like the rest (at least one epoch);
* batch sizes stay the run's (the papers' 128–4096 on many GPUs or TPUs do not fit 2
  cores); the learning rate is the paper's, scaled linearly by batch/paper batch (Goyal
  et al. 2017's rule, which the EfficientNet code itself uses: 0.016 per 256 images).

What a recipe states and the run does not scale (augmentation at 224 pixels, 10-crop
testing, the EMA decay per step) is applied as stated where the data allows it; sizes in
pixels are the paper's and a run on small images scales them by input size/224.

Explicit command-line flags still win over a recipe (see minicnn.cli).

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
        elif kind[0] == "multistep":                # ×γ at the paper's epochs, stretched
            _, milestones, gamma = kind
            marks = sorted({max(1, round(m * stretch)) for m in milestones})
            values["schedule"] = "multistep:" + ",".join(str(m) for m in marks) + f":{gamma}"
        elif kind[0] == "step":                     # ×γ every N epochs, as a staircase
            _, every, gamma = kind
            values["schedule"] = f"step:{every * stretch:.4g}:{gamma}"
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

    def describe(self, name, epochs=None, batch_size=None):
        """The recipe as the paper states it; with ``epochs`` and ``batch_size``, also
        what a run of that length and batch will use (the values that scaling changes)."""
        lines = [f"{name}: {self.paper} ({self.epochs} epochs at batch {self.batch_size})"]
        width = max(len(k) for k in self.values)
        for key, value in self.values.items():
            lines.append(f"  {key.ljust(width)}  {_words(value)}")
        if self.notes:
            lines.append("  " + self.notes)
        if epochs is not None and batch_size is not None:
            scaled = self.settings(epochs, batch_size)
            lines.append(f"  for {epochs} epochs at batch {batch_size}: lr {scaled['lr']:.4g}, "
                         f"schedule {scaled['schedule']}")
        return "\n".join(lines)


def _words(value):
    """A schedule tuple as the paper says it; anything else as it is."""
    if not isinstance(value, tuple):
        return value
    kind = value[0]
    if kind == "plateau":
        return "÷10 when the validation error stops improving (three times)"
    if kind == "multistep":
        return f"×{value[2]} at epochs {', '.join(str(m) for m in value[1])}"
    if kind in ("step", "decay"):
        return f"×{value[2]} every {value[1]} epochs"
    if kind == "warmup-decay":
        return f"linear warm-up over {value[1]} epochs, then ×{value[3]} every {value[2]} epochs"
    return value


# One table per paper. Keys the training loop reads: optimizer, lr, momentum, weight_decay,
# schedule (scaled by ``settings``), dropout, drop_path, label_smoothing, clip_grad_norm,
# rmsprop_decay and rmsprop_eps (RMSProp's ρ and ε), nesterov, bn_momentum (ours and
# PyTorch's convention: the weight of the new value), ema_decay; augment, test and
# progressive name the data recipe in words for --recipe's listing.
RECIPES = {
    "alexnet": Recipe(
        "Krizhevsky, Sutskever & Hinton 2012, §4–5", epochs=90, batch_size=128,
        values=dict(optimizer="sgd", lr=0.01, momentum=0.9, weight_decay=5e-4,
                    schedule=("plateau",), dropout=0.5,
                    augment="crop-flip (224 of 256) + PCA colour noise σ=0.1",
                    test="10crop"),
        notes="init: weights N(0, 0.01²), biases 1 in conv2, conv4, conv5 and the FC layers; "
              "roughly 90 cycles through 1.2 million images"),
    "zfnet": Recipe(
        "Zeiler & Fergus 2014, §3", epochs=70, batch_size=128,
        values=dict(optimizer="sgd", lr=0.01, momentum=0.9, weight_decay=0.0,
                    schedule=("plateau",), dropout=0.5,
                    augment="10 sub-crops 224 of the centre 256 (corners, centre, flips)",
                    test="none"),
        notes="AlexNet's recipe with every weight initialised to 0.01 and biases 0; filters "
              "whose RMS exceeds 0.1 renormalised to it; the paper names no weight decay"),
    "vgg": Recipe(
        "Simonyan & Zisserman 2015, §3", epochs=74, batch_size=256,
        values=dict(optimizer="sgd", lr=0.01, momentum=0.9, weight_decay=5e-4,
                    schedule=("plateau",), dropout=0.5,
                    augment="scale jittering S ∈ [256, 512], 224 crops, flips, "
                            "PCA colour noise",
                    test="dense, Q ∈ {256, 384, 512}, flips"),
        notes="370K iterations (74 epochs); deeper configurations start from the trained "
              "VGG-11 (A) layers"),
    "resnet": Recipe(
        "He, Zhang, Ren & Sun 2016, §3.4", epochs=120, batch_size=256,
        values=dict(optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=1e-4,
                    schedule=("plateau",), dropout=0.0,
                    augment="scale augmentation S ∈ [256, 480], 224 crops, flips, "
                            "PCA colour noise",
                    test="10crop"),
        notes="600k iterations at batch 256 ≈ 120 epochs; no dropout"),
    "resnext": Recipe(
        "Xie, Girshick, Dollár, Tu & He 2017, §4", epochs=120, batch_size=256,
        values=dict(optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=1e-4,
                    schedule=("plateau",), dropout=0.0,
                    augment="ResNet's: scale augmentation, 224 crops, flips", test="none"),
        notes="the ResNet recipe (\"the learning rate starts from 0.1, and is divided by "
              "10 for three times using the schedule in [11]\"), on 8 GPUs"),
    "wide_resnet": Recipe(
        "Zagoruyko & Komodakis 2016, §3 (CIFAR)", epochs=200, batch_size=128,
        values=dict(optimizer="sgd", lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4,
                    schedule=("multistep", (60, 120, 160), 0.2), dropout=0.3,
                    augment="crop-flip (pad 4, 32 crops)", test="none"),
        notes="dropout 0.3 between the convolutions of a block where it is used"),
    "densenet": Recipe(
        "Huang, Liu, van der Maaten & Weinberger 2017, §4.2 (ImageNet)", epochs=90,
        batch_size=256,
        values=dict(optimizer="sgd", lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4,
                    schedule=("multistep", (30, 60), 0.1), dropout=0.0,
                    augment="ResNet's: 224 crops, flips", test="none"),
        notes="Nesterov momentum without dampening; dropout 0.2 only on the CIFAR runs "
              "without augmentation"),
    "senet": Recipe(
        "Hu, Shen & Sun 2018, Implementation", epochs=100, batch_size=1024,
        values=dict(optimizer="sgd", lr=0.6, momentum=0.9, weight_decay=1e-4,
                    schedule=("step", 30, 0.1), dropout=0.0,
                    augment="random-size crops 224 (299 for Inception-ResNet), flips",
                    test="centre crop 224 of 256"),
        notes="weight decay as in the ResNet recipe they follow; batch 1024 on 8 servers"),
    "inception_v3": Recipe(
        "Szegedy et al. 2016, §8", epochs=100, batch_size=1600,
        values=dict(optimizer="rmsprop", lr=0.045, momentum=0.0, rmsprop_decay=0.9,
                    rmsprop_eps=1.0, weight_decay=4e-5, schedule=("decay", 2, 0.94),
                    label_smoothing=0.1, clip_grad_norm=2.0, dropout=0.2,
                    augment="crop-flip", test="none"),
        notes="batch 32 on each of 50 replicas; weight decay and dropout as in the reference "
              "code (the paper states neither)"),
    "inception_v4": Recipe(
        "Szegedy, Ioffe, Vanhoucke & Alemi 2017, §5", epochs=100, batch_size=640,
        values=dict(optimizer="rmsprop", lr=0.045, momentum=0.0, rmsprop_decay=0.9,
                    rmsprop_eps=1.0, weight_decay=4e-5, schedule=("decay", 2, 0.94),
                    dropout=0.2, augment="crop-flip", test="none"),
        notes="20 replicas (batch 32 each, as Inception-v3's); the same recipe for the "
              "Inception-ResNets; the paper states no epoch count (Inception-v3's 100 here)"),
    "efficientnet": Recipe(
        "Tan & Le 2019, §5.2", epochs=350, batch_size=4096,
        values=dict(optimizer="rmsprop", lr=0.256, momentum=0.9, rmsprop_decay=0.9,
                    rmsprop_eps=1e-3, weight_decay=1e-5, schedule=("decay", 2.4, 0.97),
                    bn_momentum=0.01, drop_path=0.2, dropout="0.2 (B0) → 0.5 (B7)",
                    augment="AutoAugment (RandAugment M=9 here)", test="none"),
        notes="BN momentum 0.99 in TensorFlow's convention is 0.01 in ours (and PyTorch's); "
              "survival probability 0.8 is drop-path 0.2; 350 epochs and ε = 0.001 from the "
              "released code"),
    "efficientnet_v2": Recipe(
        "Tan & Le 2021, §4 and Table 6", epochs=350, batch_size=4096,
        values=dict(optimizer="rmsprop", lr=0.256, momentum=0.9, rmsprop_decay=0.9,
                    rmsprop_eps=1e-3, weight_decay=1e-5,
                    schedule=("warmup-decay", 5, 2.4, 0.97), bn_momentum=0.01,
                    ema_decay=0.9999, drop_path=0.2,
                    progressive="4 stages; size, dropout, RandAugment, mixup as Table 6",
                    test="none"),
        notes="progressive learning: minicnn.progressive.EFFICIENTNET_V2_TABLE6 (dropout, "
              "RandAugment magnitude and mixup α come from its stages); 5 warm-up epochs "
              "from the released code"),
}

# Families whose paper trained exactly as another family's did.
SAME_RECIPE = {"inception_resnet": "inception_v4"}


def recipe(family):
    """The family's paper recipe (ValueError naming the families that have one)."""
    family = SAME_RECIPE.get(family, family)
    if family not in RECIPES:
        raise ValueError(f"no paper recipe for {family!r}; recipes exist for "
                         f"{', '.join(sorted(set(RECIPES) | set(SAME_RECIPE)))}")
    return RECIPES[family]


def describe_all(epochs=None, batch_size=None):
    """Every recipe, for ``--recipe`` on its own (scaled to a run when it is given)."""
    blocks = [RECIPES[name].describe(name, epochs, batch_size) for name in RECIPES]
    blocks += [f"{name}: as {target}" for name, target in SAME_RECIPE.items()]
    return "\n\n".join(blocks)
