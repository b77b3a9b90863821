"""Shared fixtures: the Hypothesis profile and the kernel driver.

The profile is loaded from ``cowcheck.machines.profiles``, where every profile and
budget is defined (``dev`` here, ``ci`` under ``CI=true``, or the one
``HYPOTHESIS_PROFILE`` names).

Tests that need the kernel's overlayfs take the ``kernel`` fixture. Where it
cannot run (not root, no overlay), the test is skipped on a developer's
machine and *fails* in CI (``CI=true``), so a green CI always means the
kernel was exercised.
"""

import os

import pytest
from hypothesis import settings

from cowcheck.drivers.kernel_overlay import KernelOverlay
from cowcheck.drivers.namespace import scratch_root
from cowcheck.drivers.protocol import DriverUnavailable
from cowcheck.machines import profiles

pytest.register_assert_rewrite("tests.support")
profiles.load()


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Generated checks keep their example database under ``$XDG_CACHE_HOME``: a directory of the suite's own.

    Otherwise a failure one test saved in the user's cache would be replayed by
    the next, and a test that must find a bug could pass on a replay alone.
    """
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="session")
def kernel() -> KernelOverlay:
    """The kernel overlay driver, or a loud failure in CI when it cannot run."""
    try:
        scratch_root()
    except DriverUnavailable as error:
        if os.environ.get("CI") == "true":
            pytest.fail(f"kernel overlay tests cannot run in CI: {error}")
        pytest.skip(f"kernel overlay unavailable: {error}")
    return KernelOverlay()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """In CI every Hypothesis test runs derandomized, so that a red run reproduces anywhere.

    A test whose own ``@settings`` turns derandomization off fails here at
    collection instead of drawing fresh examples in CI; so does a run whose
    profile is not derandomized (``HYPOTHESIS_PROFILE=nightly``), since the
    state machine tests run under the profile itself.
    """
    if os.environ.get("CI") != "true":
        return
    if not settings().derandomize:
        raise pytest.UsageError(f"the Hypothesis profile {profiles.chosen()!r} is not derandomized, as CI requires")
    for item in items:
        function = getattr(item, "function", None)
        chosen = getattr(function, "_hypothesis_internal_use_settings", None)
        if chosen is not None and not chosen.derandomize:
            raise pytest.UsageError(f"{item.nodeid}: a Hypothesis test must be derandomized in CI")
