"""Hypothesis settings: every profile and every budget of the suite, in one place.

Budgets live here, not in the strategies. Four profiles:

- ``quick``: ``cowspec check``'s own default, and ``make run``'s: 1000
  examples of 30 steps, about a minute against the kernel on two cores
  (half a minute with a worker per core), fresh randomness;
- ``dev``: smaller, for a developer's loop (and the suite's default);
- ``ci``: 1500 examples of 30 steps against the kernel (the issue asks for at
  least 500), derandomized so a CI failure reproduces anywhere; every errno
  the spec gives shows in its examples (``tests/cowcheck/test_machine.py``);
- ``nightly``: a long run with fresh randomness.

``chosen()`` names the profile the environment asks for, and ``load()``
loads it (``tests/conftest.py`` does, for the whole suite); ``cowspec check
--profile`` names one itself. A test that needs a budget of its own takes
it from a function here, scaled to the profile in force.

Health checks: no profile suppresses any. The machines' draws are cheap:
what is slow (a mount, an engine's step) happens in a rule's body, which
``too_slow`` does not time, and their examples stay well within Hypothesis's
size limits. A test that has cause to suppress one suppresses that one
itself and says why. Every profile turns the deadline off: one example
mounts a filesystem or drives an engine, and its time says nothing.
"""

import os

from hypothesis import Phase, settings

PROFILES = ("quick", "dev", "ci", "nightly")
DEFAULT = "quick"
"""The profile ``cowspec check`` runs when none is named."""

# The "explain" phase traces every line of every failing replay; against a
# real kernel that costs minutes and adds nothing the saved trace lacks.
PHASES = (Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink)

settings.register_profile("quick", max_examples=1000, stateful_step_count=30, deadline=None, phases=PHASES)
settings.register_profile("dev", max_examples=60, stateful_step_count=20, deadline=None, phases=PHASES)
settings.register_profile(
    "ci",
    max_examples=1500,
    stateful_step_count=30,
    deadline=None,
    derandomize=True,
    database=None,
    phases=PHASES,
    print_blob=True,
)
settings.register_profile("nightly", max_examples=5000, stateful_step_count=50, deadline=None, phases=PHASES)


def chosen() -> str:
    """The profile the environment asks for: ``HYPOTHESIS_PROFILE``, else
    ``ci`` where ``CI=true``, else ``dev``."""
    return os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") == "true" else "dev")


def load() -> str:
    """Load the chosen profile; its name."""
    name = chosen()
    settings.load_profile(name)
    return name


STORE_EXAMPLES = {"dev": 5, "ci": 25, "nightly": 200}
"""Examples of the store machine: each step drives a real Docker engine."""


def store_machine() -> settings:
    """The store machine's budget under the chosen profile: few examples of
    8 steps, derandomized in CI, no database (an engine's examples are not
    worth replaying from one), and no targeting (it has no target)."""
    name = chosen()
    return settings(
        max_examples=STORE_EXAMPLES.get(name, STORE_EXAMPLES["dev"]),
        stateful_step_count=8,
        deadline=None,
        database=None,
        derandomize=name == "ci",
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
    )


def planted_bug_search() -> settings:
    """The budget of a search for a bug planted in a test driver, to show
    the machine finds one: derandomized under every profile, so that the
    test asserting it is found is not flaky, and bounded in case a change
    makes the bug rare (600: a plain directory storing whiteouts, listed,
    came within 300 examples until the layers drew hardlinks more often and
    names too long for Linux; it comes at about 400 now)."""
    return settings(
        max_examples=600, stateful_step_count=20, database=None, deadline=None, derandomize=True, phases=PHASES
    )


SNAPSHOT_EXAMPLES = {"quick": 100, "dev": 10, "ci": 60, "nightly": 500}
"""Examples of the snapshot machine per profile: each call is a ``ctr`` command (some 20 ms) on a private containerd."""
SNAPSHOT_STEPS = {"quick": 20, "dev": 12, "ci": 20, "nightly": 40}


def snapshot_machine(name: str | None = None) -> settings:
    """The snapshot machine's budget under profile ``name`` (the chosen one by default): derandomized under
    ``ci``, no database (a snapshotter's examples are cheap to find again), no targeting (it has no target)."""
    name = name or chosen()
    return settings(
        max_examples=SNAPSHOT_EXAMPLES.get(name, SNAPSHOT_EXAMPLES["dev"]),
        stateful_step_count=SNAPSHOT_STEPS.get(name, SNAPSHOT_STEPS["dev"]),
        deadline=None,
        database=None,
        derandomize=name == "ci",
        report_multiple_bugs=False,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
    )
