"""Shared test configuration: hypothesis profiles.

    default   ~25 examples per property, quick enough to run the whole suite often
    ci        the same, derandomized: every run draws the same examples, so CI can never
              pass or fail by luck; failures print a reproduction blob
    thorough  ~300 examples per property:  pytest --hypothesis-profile=thorough

``ci`` is chosen automatically when the environment variable CI is set; hypothesis'
pytest plugin applies ``--hypothesis-profile`` on top of this choice.
"""
import os
import signal

from hypothesis import HealthCheck, settings

# Gradient checks run a forward pass per input element: they are slow by design, not by
# accident, so the too_slow health check would only add noise.
_common = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])

settings.register_profile("default", max_examples=25, **_common)
settings.register_profile("ci", max_examples=25, derandomize=True, print_blob=True,
                          database=None, **_common)
settings.register_profile("thorough", max_examples=300, **_common)
settings.load_profile("ci" if os.environ.get("CI") else "default")


import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _seeded_generators():
    """Every test starts from the same weight and dropout draws, so a test that builds a
    model without seeding it still sees the same numbers on every run and every machine:
    a check passes or fails on its merits, never by the luck of an initialization."""
    from minicnn.functional.dropout import manual_seed as seed_dropout
    from minicnn.nn.init import manual_seed as seed_init
    seed_init(0)
    seed_dropout(0)


@pytest.fixture
def terminal_sigint():
    """SIGINT as Python in a terminal has it (``default_int_handler``), whatever the test
    runner started with (a job started in the background has SIGINT ignored); the tests of
    Ctrl-C check that training puts exactly this handler back. Restored afterwards."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)
