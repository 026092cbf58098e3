"""The architecture zoo: one module per family, each runnable as a program.

    >>> import architectures
    >>> model = architectures.create("resnet50", num_classes=10, in_channels=1)
    >>> architectures.create("lenet5_lecun98").num_parameters()   # as published: 1 x 32 x 32
    60000
    >>> architectures.available()[:3]
    ['alexnet', 'alexnet_owt', 'alexnet_single_tower']

Each family module registers its named constructors — a hand-written function under
``@register``, or one ``register_variant`` call per variant of a shared builder — and
ends with::

    if __name__ == "__main__":
        main()          # minicnn.cli: --variant NAME --train mnist | --summary | --help
"""
import importlib
import numbers

def _quiet_interrupt_while_starting():
    """``python -m architectures.X`` imports this package first, then NumPy and the engine,
    for a second or more before ``minicnn.cli.main`` takes charge of Ctrl-C. A Ctrl-C in
    that time would print an import traceback (and SIGTERM would kill it without a word);
    this handler ends the program with one line instead (``main`` puts Python's own
    handlers back as it starts)."""
    import signal
    import sys
    import threading
    if sys.argv[:1] != ["-m"] or threading.current_thread() is not threading.main_thread():
        return               # imported by a program or a test, not started as one: no change

    def stop(signum, frame):
        name = "interrupted" if signum == signal.SIGINT else "terminated (SIGTERM)"
        print(f"{name} while starting", file=sys.stderr, flush=True)
        raise SystemExit(128 + signum)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, stop)
    if hasattr(signal, "SIGTERM") and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, stop)


_quiet_interrupt_while_starting()

FAMILIES = (
    "lenet5", "alexnet", "zfnet", "vgg", "nin", "googlenet", "bn_inception", "inception_v3",
    "inception_v4", "inception_resnet", "resnet", "wide_resnet", "resnext", "senet",
    "densenet", "squeezenet", "mobilenet_v1", "mobilenet_v2", "xception", "efficientnet",
    "efficientnet_v2",
    "efficientdet",
)


class Entry:
    """One named constructor: what it builds and the input and classes it was published
    for (``create(name)`` builds exactly that)."""

    def __init__(self, name, family, constructor, input_size, description, in_channels=3,
                 num_classes=1000):
        self.name, self.family, self.constructor = name, family, constructor
        self.input_size, self.description = input_size, description
        self.in_channels, self.num_classes = in_channels, num_classes

    def __repr__(self):
        return (f"Entry({self.name!r}, family={self.family!r}, input={self.in_channels}x"
                f"{self.input_size}x{self.input_size}, num_classes={self.num_classes})")


_REGISTRY = {}
_loaded = False


def register(name, input_size, description="", in_channels=None, num_classes=None):
    """Decorator: add a constructor ``fn(num_classes=..., in_channels=..., **options)``.

    ``input_size`` is the published input side (224 for ResNet, 299 for Inception-v3, ...).
    ``in_channels`` and ``num_classes`` are the published input channels and classes;
    left out, they are the constructor's own defaults (LeNet-5's ``num_classes=10,
    in_channels=1``), so the registry and the signature cannot disagree.
    """
    def decorate(constructor):
        family = constructor.__module__.rsplit(".", 1)[-1]
        if family == "__main__":  # the module is running as a program: find its real name
            import __main__
            family = (__main__.__spec__.name if __main__.__spec__ else family).rsplit(".", 1)[-1]
        doc = description or (constructor.__doc__ or "").strip().split("\n")[0]
        defaults = _signature_defaults(constructor)
        _REGISTRY[name] = Entry(
            name, family, constructor, input_size, doc,
            in_channels=in_channels if in_channels is not None else defaults.get("in_channels", 3),
            num_classes=num_classes if num_classes is not None else defaults.get("num_classes", 1000))
        return constructor
    return decorate


def register_variant(name, builder, input_size, in_channels=3, num_classes=1000,
                     description="", **settings):
    """Register ``builder(num_classes=..., in_channels=..., **settings, **options)`` as the
    variant ``name``, published for ``in_channels`` x ``input_size`` input and
    ``num_classes`` classes. One call replaces a hand-written constructor::

        register_variant("resnet20", cifar_resnet, 32, 3, 10, "ResNet-20 (He et al. 2016)",
                         depth=20)

    Returns the constructor it registered (callable like any other named constructor).
    The variant belongs to the family of the module that defines ``builder``: a family
    that builds on another's builder (Wide ResNet-50-2 on ResNet's) wraps it in a builder
    of its own. ``settings`` are defaults: a keyword of the call overrides them.
    """
    def constructor(num_classes=num_classes, in_channels=in_channels, **options):
        return builder(num_classes=num_classes, in_channels=in_channels,
                       **{**settings, **options})
    constructor.__name__ = constructor.__qualname__ = name
    constructor.__module__ = getattr(builder, "__module__", __name__)
    constructor.__doc__ = description or getattr(builder, "__doc__", None)
    return register(name, input_size, description, in_channels, num_classes)(constructor)


def _signature_defaults(constructor):
    import inspect
    try:
        parameters = inspect.signature(constructor).parameters
    except (TypeError, ValueError):
        return {}
    return {key: p.default for key, p in parameters.items()
            if p.default is not inspect.Parameter.empty}


def _load_all():
    global _loaded
    if not _loaded:
        for family in FAMILIES:
            try:
                importlib.import_module(f"architectures.{family}")
            except ModuleNotFoundError as error:
                if error.name != f"architectures.{family}":
                    raise
        _loaded = True


def available(family=None):
    """Sorted names of every registered architecture (of one ``family`` if given).

    With a family only that module is imported, so one family's CLI never depends on
    the others.
    """
    if family is None:
        _load_all()
    else:
        importlib.import_module(f"architectures.{family}")
    return sorted(n for n, e in _REGISTRY.items() if family is None or e.family == family)


def entry(name):
    """The registry ``Entry`` for ``name`` (ValueError listing the choices if unknown)."""
    if name not in _REGISTRY:
        _load_all()
    if name not in _REGISTRY:
        raise ValueError(f"unknown architecture {name!r}; available: {', '.join(available())}")
    return _REGISTRY[name]


def create(name, num_classes=None, in_channels=None, **options):
    """Build the architecture registered as ``name``: as published (its own input channels
    and classes) unless ``num_classes`` / ``in_channels`` say otherwise.

        create("lenet5")                        # 1 x 28 x 28 digits, 10 classes
        create("resnet50", num_classes=10, in_channels=1)
    """
    chosen = entry(name)
    num_classes = chosen.num_classes if num_classes is None else num_classes
    in_channels = chosen.in_channels if in_channels is None else in_channels
    for key, value in (("num_classes", num_classes), ("in_channels", in_channels)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"create({name!r}): {key} must be a positive integer, got "
                             f"{value!r}")
    return chosen.constructor(num_classes=num_classes, in_channels=in_channels, **options)
