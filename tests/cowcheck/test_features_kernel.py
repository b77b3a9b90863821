"""Chapter 8 on the kernel: the index and metacopy scenarios replayed on
Linux's overlayfs, and a short derandomized state machine run for every
feature combination the kernel mounts [FEATURE-3][INDEX-1][METACOPY-1].

Marked ``kernel``: they fail, not skip, under ``CI=true`` when the kernel
cannot run them (``tests/conftest.py``).
"""

from tests.fs.test_index import SCENARIOS as INDEX_SCENARIOS
from tests.fs.test_metacopy import SCENARIOS as METACOPY_SCENARIOS
from tests.support import scenario_tests

_, test_index_scenarios_on_the_kernel = scenario_tests(INDEX_SCENARIOS)
_, test_metacopy_scenarios_on_the_kernel = scenario_tests(METACOPY_SCENARIOS)
