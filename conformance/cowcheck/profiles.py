"""Hypothesis settings profiles: budgets live here, not in the strategies.

- ``dev``: quick, for a developer's loop;
- ``ci``: at least 500 examples of 30 steps against the kernel, derandomized
  so a CI failure reproduces;
- ``nightly``: a long run with fresh randomness.
"""

from hypothesis import HealthCheck, settings

SLOW_OK = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]

settings.register_profile(
    "dev", max_examples=60, stateful_step_count=20, deadline=None, suppress_health_check=SLOW_OK
)
settings.register_profile(
    "ci",
    max_examples=500,
    stateful_step_count=30,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=SLOW_OK,
    print_blob=True,
)
settings.register_profile(
    "nightly", max_examples=5000, stateful_step_count=50, deadline=None, suppress_health_check=SLOW_OK
)

PROFILES = ("dev", "ci", "nightly")
