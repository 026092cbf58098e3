"""Shared test configuration: hypothesis profiles.

    default   ~25 examples per property, quick enough to run the whole suite often
    ci        the same, derandomized: every run draws the same examples, so CI can never
              pass or fail by luck; failures print a reproduction blob
    thorough  ~300 examples per property:  pytest --hypothesis-profile=thorough

``ci`` is chosen automatically when the environment variable CI is set; hypothesis'
pytest plugin applies ``--hypothesis-profile`` on top of this choice.
"""
import os

from hypothesis import HealthCheck, settings

# Gradient checks run a forward pass per input element: they are slow by design, not by
# accident, so the too_slow health check would only add noise.
_common = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])

settings.register_profile("default", max_examples=25, **_common)
settings.register_profile("ci", max_examples=25, derandomize=True, print_blob=True,
                          database=None, **_common)
settings.register_profile("thorough", max_examples=300, **_common)
settings.load_profile("ci" if os.environ.get("CI") else "default")
