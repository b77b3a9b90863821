"""Chapter 7: sizes as Docker's overlay2 counts them."""

from collections.abc import Callable

from tests.support import Result, Scenario, d, f, h, op, s, scenario_tests, w


def sizes(size: int, virtual: int) -> Callable[[Result], None]:
    def check(result: Result) -> None:
        assert result["sizes"] == {"size": size, "virtual_size": virtual}

    return check


SCENARIOS = [
    Scenario(
        "layer-size-counts-inodes-once",
        "[SIZE-1][SIZE-3]",
        [[f("/a", "12345"), h("/b", "/a"), s("/l", "abc"), d("/x"), f("/empty")], [w("/a"), f("/c", "67")]],
        [],
        then=sizes(0, 5 + 3 + 2),
    ),
    Scenario(
        "copy-up-counts-in-full",
        "[SIZE-2][COPYUP-4]",
        [[f("/a", "123456789")]],
        [op("chmod", path="/a", mode=0o600)],
        then=sizes(9, 18),
    ),
    Scenario(
        "writable-layer-hardlinks-and-whiteouts",
        "[SIZE-1][SIZE-2]",
        [[f("/gone", "xyz")]],
        [
            op("unlink", path="/gone"),
            op("create", path="/n", mode=0o644),
            op("write", path="/n", offset=0, data="abcd"),
            op("link", src="/n", dst="/m"),
            op("symlink", target="n", path="/l"),
        ],
        then=sizes(4 + 1, 4 + 1 + 3),
    ),
]

test_model, test_kernel = scenario_tests(SCENARIOS)
