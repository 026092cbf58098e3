"""The architecture zoo: one module per family, each runnable as a program.

    >>> import architectures
    >>> model = architectures.create("resnet50", num_classes=10, in_channels=1)
    >>> architectures.available()[:3]
    ['alexnet', 'alexnet_owt', 'alexnet_single_tower']

Each family module registers its named constructors with ``@register`` and ends with::

    if __name__ == "__main__":
        main()          # minicnn.cli: --variant NAME --train mnist | --summary | --help
"""
import importlib

FAMILIES = (
    "lenet5", "alexnet", "zfnet", "vgg", "nin", "googlenet", "bn_inception", "inception_v3",
    "inception_v4", "inception_resnet", "resnet", "wide_resnet", "resnext", "senet",
    "densenet", "squeezenet", "mobilenet_v1", "mobilenet_v2", "xception", "efficientnet",
    "efficientnet_v2",
    "efficientdet",
)


class Entry:
    """One named constructor: what it builds and the input it was published for."""

    def __init__(self, name, family, constructor, input_size, description):
        self.name, self.family, self.constructor = name, family, constructor
        self.input_size, self.description = input_size, description

    def __repr__(self):
        return f"Entry({self.name!r}, family={self.family!r}, input_size={self.input_size})"


_REGISTRY = {}
_loaded = False


def register(name, input_size, description=""):
    """Decorator: add a constructor ``fn(num_classes=1000, in_channels=3, **options)``.

    ``input_size`` is the published input side (224 for ResNet, 299 for Inception-v3, ...).
    """
    def decorate(constructor):
        family = constructor.__module__.rsplit(".", 1)[-1]
        if family == "__main__":  # the module is running as a program: find its real name
            import __main__
            family = (__main__.__spec__.name if __main__.__spec__ else family).rsplit(".", 1)[-1]
        doc = description or (constructor.__doc__ or "").strip().split("\n")[0]
        _REGISTRY[name] = Entry(name, family, constructor, input_size, doc)
        constructor.registry_name = name
        return constructor
    return decorate


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


def create(name, num_classes=1000, in_channels=3, **options):
    """Build the architecture registered as ``name``."""
    return entry(name).constructor(num_classes=num_classes, in_channels=in_channels, **options)
