"""The seed's scenarios (Docker's "About storage drivers") as plain tests."""

from cowcheck.drivers.kernel_overlay import KernelOverlay
from tests.support import Result, Scenario, b64, d, f, op, paths, scenario_tests

# FROM ubuntu:15.04 / COPY . /app / RUN make /app / CMD python /app/app.py:
# three layers with content; CMD adds metadata only and no layer.
UBUNTU = [d("/bin"), f("/bin/sh", "#!sh", 0o755), d("/etc"), f("/etc/os-release", "ubuntu 15.04"), d("/tmp", 0o1777)]
COPY_APP = [d("/app"), f("/app/app.py", "print('hi')"), f("/app/Makefile", "all:\n")]
RUN_MAKE = [d("/app"), f("/app/app.bin", "\x7fELF"), d("/tmp", 0o1777), f("/tmp/build.log", "ok")]
DOCKERFILE = [UBUNTU, COPY_APP, RUN_MAKE]


def four_instruction_stack(result: Result) -> None:
    merged = paths(result["merged"])
    assert {"/app/app.py", "/app/Makefile", "/app/app.bin", "/etc/os-release", "/tmp/build.log"} <= set(merged)
    assert result["upper"] == []
    assert result["sizes"]["size"] == 0
    assert result["sizes"]["virtual_size"] == sum(
        len(each) for each in ["#!sh", "ubuntu 15.04", "print('hi')", "all:\n", "\x7fELF", "ok"]
    )


def changed_in_container(result: Result) -> None:
    upper = paths(result["upper"])
    assert set(upper) == {"/app", "/app/app.py"}
    assert paths(result["merged"])["/app/app.py"]["size"] == len("print('hi')") + len("# edited\n")
    assert result["sizes"]["size"] == len("print('hi')# edited\n")


def separate_container(result: Result) -> None:
    assert paths(result["merged"])["/app/app.py"]["size"] == len("print('hi')")
    assert set(paths(result["upper"])) == {"/app", "/app/notes"}


SCENARIOS = [
    Scenario(
        "seed-four-instruction-dockerfile",
        "[LOOKUP-3][SIZE-3]",
        DOCKERFILE,
        [op("read", path="/app/app.py")],
        results=[{"ok": True, "value": b64("print('hi')")}],
        then=four_instruction_stack,
    ),
    Scenario(
        "seed-file-changed-in-container-is-copied-up",
        "[COPYUP-1][COPYUP-4][SIZE-2]",
        DOCKERFILE,
        [op("append", path="/app/app.py", data="# edited\n")],
        then=changed_in_container,
    ),
    # Several containers on one image: each scenario is its own container
    # over the same layers, so one container's writes never reach another.
    Scenario(
        "seed-second-container-sees-the-image",
        "[COPYUP-1][SIZE-2]",
        DOCKERFILE,
        [op("create", path="/app/notes", mode=0o644)],
        then=separate_container,
    ),
]

test_model, test_kernel = scenario_tests(SCENARIOS)


def test_containers_on_one_image_are_separate(kernel: KernelOverlay) -> None:
    """[COPYUP-1] Five containers on one image, each with its own writable layer, open at once."""
    from cowspec.formats.trace import decode_trace

    trace = decode_trace({"format": "cowspec-trace/1", "layers": DOCKERFILE, "ops": []})
    sessions = [kernel.open(trace.layers, trace.features) for _ in range(5)]
    try:
        for number, session in enumerate(sessions):
            written = session.perform(
                decode_trace({**_doc(), "ops": [op("write", path="/app/app.py", offset=0, data=f"c{number}")]}).ops[0]
            )
            assert written == {"ok": True}
        for number, session in enumerate(sessions):
            merged = paths(session.merged())
            assert merged["/app/app.py"]["size"] == len("print('hi')")
            assert paths(session.upper())["/app/app.py"]["size"] == len("print('hi')")
            read = session.perform(decode_trace({**_doc(), "ops": [op("read", path="/app/app.py")]}).ops[0])
            assert read == {"ok": True, "value": b64(f"c{number}" + "print('hi')"[2:])}
    finally:
        for session in sessions:
            session.close()


def _doc() -> dict[str, object]:
    return {"format": "cowspec-trace/1", "layers": []}
