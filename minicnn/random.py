"""Every random generator a training run draws from, by a stable name.

A run resumes bit for bit only if each generator it draws from continues from the same
state, so a training checkpoint saves them all. The ones a module keeps for itself (the
generator dropout uses when given none, the one weight initializers use) register here
when the module is imported::

    register_generator("module:minicnn.functional.dropout._generator", lambda: _generator)

A function that returns the generator (rather than the generator itself) follows
``manual_seed``, which replaces a module's generator with a new one. A model's own
generators (a ``Dropout`` built with ``rng=``) belong to that model and are found on it:
``generators(model)`` adds them as ``model:<module name>.<attribute>``. The names are the
keys of a checkpoint's ``random`` section, so they never change.

The loaders need nothing here: their shuffling and augmentation are functions of
(seed, epoch, batch) (``minicnn.data.loader``), with no state to carry over.
"""
import numpy as np

_registered = {}


def register_generator(name, generator):
    """Make ``generator`` (a ``numpy.random.Generator``, or a function of no arguments
    returning the current one) part of every training checkpoint under ``name``."""
    if not (isinstance(generator, np.random.Generator) or callable(generator)):
        raise TypeError(f"register_generator: {name!r} needs a numpy.random.Generator or a "
                        f"function returning one, got {type(generator).__name__}")
    _registered[name] = generator


def _current(generator):
    return generator if isinstance(generator, np.random.Generator) else generator()


def generators(model=None):
    """{name: Generator} of every registered generator and, with ``model``, every
    generator held as an attribute of its modules."""
    found = {}
    if model is not None:
        for module_name, module in model.named_modules():
            for attribute, value in vars(module).items():
                if isinstance(value, np.random.Generator):
                    found[f"model:{module_name}.{attribute}"] = value
    for name, generator in sorted(_registered.items()):
        found[name] = _current(generator)
    return found


def random_state(model=None):
    """The state of every generator (see ``generators``) and of NumPy's legacy global one,
    as plain values a checkpoint can hold."""
    state = {name: g.bit_generator.state for name, g in generators(model).items()}
    state["numpy.random"] = list(np.random.get_state())
    return state


def set_random_state(model, state):
    """Restore what ``random_state`` returned; generators the state does not name keep
    theirs (a checkpoint from a run that did not use them)."""
    for name, generator in generators(model).items():
        if name in state:
            generator.bit_generator.state = state[name]
    if "numpy.random" in state:
        kind, keys, position, has_gauss, cached = state["numpy.random"]
        np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), int(position),
                             int(has_gauss), float(cached)))
