"""Chapter 15 against a real Docker engine: every figure, to the byte."""

import os
import shutil
from typing import cast

import pytest

from cowcheck.compare import store_differences
from cowcheck.drivers.docker_store import (
    _call_outcome,
    docker_cli_reclaimable,
    figures,
    mount_point_places,
    perform_step,
    refusal_kind,
)  # fmt: skip
from cowcheck.drivers.engines import Dockerd, engine_api
from cowcheck.drivers.protocol import DriverError, DriverUnavailable
from cowcheck.images import docker_archive
from cowspec.formats.store_trace import apply_step, store_result
from cowspec.fs.calls import Append, Create, Op, Write
from cowspec.fs.observe import Entry
from cowspec.fs.operations import step
from cowspec.oci.identity import diff_id
from cowspec.oci.layer_tar import LayerTar, TarEntry, encode_layer
from cowspec.store.state import (
    REFUSAL_KINDS,
    HistoryRow,
    Image,
    Store,
    container_size,
    create,
    history,
    image_size,
    layer_of,
    load,
    system_df,
    with_filesystem,
)  # fmt: skip
from cowspec.store.steps import CreateContainer, LoadImage, RunOps, Step
from tests.store.test_store import MOUNT_CASES, MOUNTED_IMAGE, MOUNTS

BASE_HISTORY = [("ADD busybox", False), ('CMD ["/bin/sh"]', True), ("COPY app", False)]
FINAL_HISTORY = [*BASE_HISTORY, ("CMD /app/hello.sh", True)]
# Each container: the shell command it runs, and the same as model ops.
RUNS: dict[str, tuple[str, list[Op]]] = {
    "c1": ("printf Hi >> /app/hello.sh", [Append("/app/hello.sh", b"Hi")]),
    "c2": ("printf 12345 > /app/new", [Create("/app/new", 0o644), Write("/app/new", 0, b"12345")]),
    "c3": ("true", []),
}


def go_human_size(size: int) -> str:
    """A size as docker's CLI prints it (go-units ``HumanSize``: decimal units, 4 significant digits)."""
    value, units = float(size), ["B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"]
    while value >= 1000 and len(units) > 1:
        value, units = value / 1000, units[1:]
    return f"{value:.4g}{units[0]}"


def test_go_human_size() -> None:
    """[STORE-4] The units the CLI prints: the issue's 2,045,873 bytes were 2.046MB."""
    assert [go_human_size(each) for each in (0, 72, 999, 1000, 1137, 2_045_873, 10**9)] == [
        "0B", "72B", "999B", "1kB", "1.137kB", "2.046MB", "1GB",
    ]  # fmt: skip


def test_reclaimable_from_the_engines_numbers() -> None:
    """[STORE-4] The driver's figure uses only /system/df: used images' Size - SharedSize, -1 skipped."""
    images = [
        {"Size": 72, "SharedSize": 28, "Containers": 2},
        {"Size": 28, "SharedSize": 28, "Containers": 0},
        {"Size": 50, "SharedSize": -1, "Containers": 1},  # unknown: the CLI takes nothing away
        {"Size": 10, "SharedSize": 0, "Containers": 0},
    ]
    assert docker_cli_reclaimable({"LayersSize": 160, "Images": images}) == 160 - 44
    assert docker_cli_reclaimable({"LayersSize": 0, "Images": None}) == 0


def layers() -> list[LayerTar]:
    busybox = shutil.which("busybox") or "/bin/busybox"
    with open(busybox, "rb") as handle:
        binary = handle.read()
    return [
        LayerTar((TarEntry("/bin", "dir", 0o755), TarEntry("/bin/busybox", "file", 0o755, data=binary),
                  TarEntry("/bin/sh", "symlink", 0o777, link="busybox"))),
        LayerTar((TarEntry("/app", "dir", 0o755), TarEntry("/app/hello.sh", "file", 0o755, data=b"x" * 100),
                  TarEntry("/app/data", "file", 0o644, data=b"d" * 50),
                  TarEntry("/app/link", "hardlink", link="/app/data"))),
    ]  # fmt: skip


def test_store_figures_equal_dockers(tmp_path: object) -> None:
    """[STORE-1][STORE-2][STORE-3][STORE-4] Image sizes, history rows, container sizes, system df."""
    tars = layers()
    archives = [encode_layer(each) for each in tars]
    ids = tuple(diff_id(each) for each in archives)
    base = Image(ids, tuple(HistoryRow(text, empty) for text, empty in BASE_HISTORY))
    final = Image(ids, tuple(HistoryRow(text, empty) for text, empty in FINAL_HISTORY))
    names = {base.id: "cowspec/base:1", final.id: "cowspec/final:1"}
    contents = [layer_of(each) for each in tars]
    store = load(load(Store(), names[base.id], base, contents), names[final.id], final, contents)
    for name, (_, ops) in RUNS.items():
        store = create(store, name, names[final.id])
        filesystem = store.containers[name].filesystem
        for op in ops:
            filesystem = step(filesystem, op).container
        store = with_filesystem(store, name, filesystem)
    try:
        with Dockerd() as docker:
            for image, rows in ((base, BASE_HISTORY), (final, FINAL_HISTORY)):
                loaded = docker.docker("load", stdin=docker_archive(archives, names[image.id], rows))
                assert loaded.returncode == 0, loaded.stderr.decode()
            for name, (command, _) in RUNS.items():
                ran = docker.docker(
                    "run", "--name", name, "--network", "none", names[final.id], "/bin/sh", "-c", command
                )
                assert ran.returncode == 0, ran.stderr.decode()
            images = {name: engine_api(docker, f"/images/{name}/json") for name in names.values()}
            histories = {name: engine_api(docker, f"/images/{name}/history") for name in names.values()}
            containers = engine_api(docker, "/containers/json?all=1&size=1")
            df = engine_api(docker, "/system/df")
            printed = docker.docker("system", "df", "--format", "{{.Type}}|{{.Size}}|{{.Reclaimable}}")
            assert printed.returncode == 0, printed.stderr.decode()
    except DriverUnavailable as error:
        if os.environ.get("CI") == "true":
            pytest.fail(str(error))
        pytest.skip(str(error))
    for image_id, name in names.items():
        assert images[name]["Size"] == image_size(store, image_id)  # type: ignore[index]
        rows = [(row["CreatedBy"], row["Size"]) for row in histories[name]]  # type: ignore[attr-defined]
        assert rows == history(store, image_id)
    by_name = {each["Names"][0].lstrip("/"): each for each in containers}  # type: ignore[attr-defined]
    for name in RUNS:
        # The API leaves SizeRw out when it is 0.
        assert (by_name[name].get("SizeRw", 0), by_name[name]["SizeRootFs"]) == container_size(store, name)
    usage, total, reclaimable = system_df(store)
    reported = {each["RepoTags"][0]: each for each in df["Images"]}  # type: ignore[index]
    for each in usage:
        row = reported[each.tags[0]]
        assert (row["Size"], row["SharedSize"], row["Containers"]) == (each.size, each.shared, each.containers)
    assert df["LayersSize"] == total  # type: ignore[index]
    # [STORE-4] Reclaimable, from the engine's numbers as the CLI works it out, and as the CLI prints it.
    assert isinstance(df, dict)
    assert docker_cli_reclaimable(df) == reclaimable == total  # the containers' image has no unique size
    images_row = next(line for line in printed.stdout.decode().splitlines() if line.startswith("Images|"))
    assert images_row == f"Images|{go_human_size(total)}|{go_human_size(reclaimable)} ({reclaimable * 100 // total}%)"
    assert len({each.get("SizeRw", 0) for each in by_name.values()}) == 3  # the three containers really differ


def engine_unavailable(error: Exception) -> None:
    """Skip where no engine can run; fail loudly in CI, where one must."""
    if os.environ.get("CI") == "true":
        pytest.fail(str(error))
    pytest.skip(str(error))


MODEL_RESULT: Entry = {
    "format": "cowspec-store-trace-result/1",
    "steps": [
        {"ok": True},
        {"ok": False, "refusal": "image-in-use", "reason": "image 'a:1' is used by a container"},
        {"ok": True, "results": [{"ok": True}, {"errno": "EXDEV"}]},
    ],
    "layers": 1, "images": {}, "containers": {}, "images_total": 0, "reclaimable": 0, "volumes": {},
}  # fmt: skip


def with_step(index: int, item: Entry) -> Entry:
    steps = list(cast(list[Entry], MODEL_RESULT["steps"]))
    steps[index] = item
    return {**MODEL_RESULT, "steps": steps}


def test_refusals_compare_by_kind_not_by_reason() -> None:
    """[STORE-12] The same kind in other words agrees; another kind, a kind missing, a rejection do not."""
    assert store_differences(MODEL_RESULT, MODEL_RESULT) == []
    worded = with_step(1, {"ok": False, "refusal": "image-in-use", "reason": "conflict: unable to remove ..."})
    assert store_differences(MODEL_RESULT, worded) == []
    other = with_step(1, {"ok": False, "refusal": "no-such-image", "reason": "image 'a:1' is used by a container"})
    assert store_differences(MODEL_RESULT, other) == [
        "step 1: model refused, image-in-use (image 'a:1' is used by a container), "
        "real refused, no-such-image (image 'a:1' is used by a container)"
    ]
    unnamed = with_step(1, {"ok": False, "reason": "image 'a:1' is used by a container"})
    assert store_differences(MODEL_RESULT, unnamed) == [
        "step 1: model refused, image-in-use (image 'a:1' is used by a container), "
        "real refused, of no kind given (image 'a:1' is used by a container)"
    ]
    done = with_step(1, {"ok": True})
    assert store_differences(MODEL_RESULT, done) == [
        "step 1: model refused, image-in-use (image 'a:1' is used by a container), real ok"
    ]
    rejected = with_step(0, {"ok": False, "rejected": True, "reason": "duplicate path"})
    assert store_differences(rejected, MODEL_RESULT) == [
        "step 0: model the spec rejects the step's input (duplicate path), real ok"
    ]


def test_an_ops_result_is_compared_call_by_call() -> None:
    """[STORE-11][STORE-5] A real EBUSY where the model says EXDEV is a difference, named by step and op."""
    real = with_step(2, {"ok": True, "results": [{"ok": True}, {"errno": "EBUSY"}]})
    assert store_differences(MODEL_RESULT, real) == ["step 2 op 1: model {'errno': 'EXDEV'}, real {'errno': 'EBUSY'}"]
    short = with_step(2, {"ok": True, "results": [{"ok": True}]})
    assert store_differences(MODEL_RESULT, short) == ["step 2: model has 2 op results, real has 1"]


# What Docker 20.10.24 said, word for word, when it refused (the Docker CLI 28.2.2 in front of it).
ENGINE_MESSAGES = [
    ("Error response from daemon: No such image: nope:1", "no-such-image"),
    ("Error: No such image: nope:1", "no-such-image"),
    ("Error response from daemon: No such container: noc", "no-such-container"),
    ("Error: No such container: noc", "no-such-container"),
    ("Error: No such volume: nov", "no-such-volume"),
    ("Error response from daemon: Invalid container name (c), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed",
     "invalid-name"),
    ('Error response from daemon: Conflict. The container name "/c1" is already in use by container "1bf0".',
     "name-in-use"),
    ('Error response from daemon: conflict: unable to remove repository reference "t:1" (must force) - '
     "container 1bf0113400ef is using its referenced image 45f8f9616fca", "image-in-use"),
    ("Error response from daemon: remove v1: volume is in use - [9bcf2036d82f]", "volume-in-use"),
    ("Error response from daemon: source /tmp/x/root/overlay2/cfc8/merged/f is not directory",
     "volume-on-non-directory"),
    ("Error response from daemon: lstat /tmp/x/root/overlay2/755f/merged/f/x: not a directory",
     "volume-on-non-directory"),
    ("Error response from daemon: evalSymlinksInScope: too many links in /tmp/x/root/overlay2/52b4/merged/a",
     "volume-on-symlink-loop"),
    ("too many non-empty layers in History section", "other"),
]  # fmt: skip


def test_the_engines_words_name_a_kind() -> None:
    """[STORE-12] Each kind the model gives is read from the engine's message; anything else is 'other'."""
    for message, kind in ENGINE_MESSAGES:
        assert refusal_kind(message) == kind, message
    assert {kind for _, kind in ENGINE_MESSAGES} == {*REFUSAL_KINDS, "other"}


def test_the_helpers_lines() -> None:
    """[STORE-11] cowspec-call prints ok or an errno's name and number; the number is what is read."""
    assert _call_outcome("ok") == {"ok": True}
    assert _call_outcome("EXDEV 18") == {"errno": "EXDEV"}
    assert _call_outcome("EBUSY 16") == {"errno": "EBUSY"}
    with pytest.raises(DriverError, match="printed"):
        _call_outcome("EXDEV")


def test_mount_point_places() -> None:
    """[STORE-11] Where starting a container may make directories: the writable layer, or the volume above."""
    sources = {"/data": "/v1", "/data/inner": "/v4", "/keep/sub/deep": "/v5"}
    assert mount_point_places("/upper", sources) == [
        "/upper/keep/sub/deep", "/upper/keep/sub", "/upper/data", "/upper/keep", "/v1/inner",
    ]  # fmt: skip


def test_renames_and_links_are_the_engines(tmp_path: object) -> None:
    """[STORE-11][STORE-9] Each call made by the engine's running container, and the model agrees with it.

    The engine's answers are read from the calls themselves: EBUSY for a mount
    point, say, is what no stopped container's layers could give (there the
    mount point is a plain directory of the image).
    """
    steps: list[Step] = [
        LoadImage("mounts:1", (MOUNTED_IMAGE,), (HistoryRow("COPY"),)),
        CreateContainer("mounted", "mounts:1", MOUNTS),
        RunOps("mounted", tuple(op for op, _ in MOUNT_CASES)),
    ]
    store, items = Store(), list[Entry]()
    for each in steps:
        store, item = apply_step(store, each)
        items.append(item)
    try:
        with Dockerd() as docker:
            real_items = [perform_step(docker, each) for each in steps]
            observed = figures(docker, real_items)
            changes = docker.docker("diff", "mounted").stdout.decode().split("\n")
            state = docker.docker("inspect", "--format", "{{.State.Status}}", "mounted").stdout.decode().strip()
    except DriverUnavailable as error:
        engine_unavailable(error)
    assert real_items[:2] == [{"ok": True}, {"ok": True}]
    expected = [{"ok": True} if errno is None else {"errno": errno} for _, errno in MOUNT_CASES]
    assert real_items[2] == {"ok": True, "results": expected}
    assert store_differences(store_result(store, items), observed) == []
    # The container ran for the calls and was stopped; the mount point it made
    # for /new went again, as the model's container never ran.
    assert state == "exited"
    assert not any("/new" in line for line in changes), changes


def test_ops_are_made_without_docker_s_init_layer() -> None:
    """[STORE-13] The container's lower directories the driver mounts leave out overlay2's ``-init`` layer."""
    from cowcheck.drivers.docker_store import image_lowers

    lower = "/d/overlay2/abc-init/diff:/d/overlay2/l2/diff:/d/overlay2/l1/diff"
    assert image_lowers(lower) == ["/d/overlay2/l2/diff", "/d/overlay2/l1/diff"]
    assert image_lowers("/d/overlay2/init/diff") == ["/d/overlay2/init/diff"]  # a layer named so is not the init
