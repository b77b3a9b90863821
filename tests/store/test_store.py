"""Chapter 15: the store, after the seed's walk-through (acme/my-base-image, acme/my-final-image)."""

from collections.abc import Callable

import pytest

from cowspec.errors import SpecError
from cowspec.fs.build import LayerEntry, build_layer
from cowspec.fs.calls import Link, Ok, Rename, Stat, Write
from cowspec.fs.layer import Layer
from cowspec.fs.operations import step
from cowspec.oci.identity import digest
from cowspec.store.state import (
    REFUSAL_KINDS,
    HistoryRow,
    Image,
    Refused,
    Store,
    container_size,
    create,
    create_volume,
    ensure_volumes,
    history,
    image_size,
    load,
    remove_container,
    remove_image,
    remove_volume,
    run_op,
    system_df,
    with_filesystem,
)  # fmt: skip
from cowspec.store.steps import Build, Instruction, build


def layer(*files: tuple[str, int]) -> Layer:
    return build_layer(tuple(LayerEntry(path, "file", 0o644, data=b"x" * size) for path, size in files), "layer")


UBUNTU = [layer(("/bin/bash", 1000), ("/etc/os-release", 30)), layer(("/etc/apt/sources.list", 7)), layer()]
APP = layer(("/app/hello.sh", 100))
IDS = [digest(f"layer {index}".encode()) for index in range(4)]
BASE_NAME, FINAL_NAME = "acme/my-base-image:1.0", "acme/my-final-image:1.0"
BASE = Image(
    tuple(IDS),
    (HistoryRow("ADD file:ubuntu"), HistoryRow("RUN mkdir -p /run/systemd"), HistoryRow("RUN sed"),
     HistoryRow('CMD ["/bin/bash"]', empty_layer=True), HistoryRow("COPY dir:app")),
)  # fmt: skip
FINAL = Image(tuple(IDS), (*BASE.history, HistoryRow("CMD /app/hello.sh", empty_layer=True)))


def seed_store() -> Store:
    store = load(Store(), BASE_NAME, BASE, [*UBUNTU, APP])
    return load(store, FINAL_NAME, FINAL, [*UBUNTU, APP])


def test_images_share_layers_by_chain_id() -> None:
    """[STORE-1][STORE-2][IDENTITY-2] The final image adds only a history row: no layer is stored twice."""
    store = seed_store()
    assert len(store.layers) == 4
    assert image_size(store, BASE.id) == image_size(store, FINAL.id) == 1000 + 30 + 7 + 100
    other = Image((IDS[3],), (HistoryRow("COPY dir:app"),))
    assert len(load(store, "other:1", other, [APP]).layers) == 5  # the same DiffID on another parent


def test_equal_images_are_one_image_under_two_tags() -> None:
    """[STORE-7] Same layers and history: one image, so nothing is shared and rmi of one tag only untags."""
    store = load(seed_store(), "again:1", BASE, [*UBUNTU, APP])
    assert len(store.images) == 2 and store.tags["again:1"] == store.tags[BASE_NAME]
    usage, _, _ = system_df(store)
    assert [each.tags for each in usage] == [(BASE_NAME, "again:1"), (FINAL_NAME,)]
    store = create(store, "c0", "again:1")
    untagged = remove_image(store, BASE_NAME)
    assert BASE_NAME not in untagged.tags and len(untagged.images) == 2


def test_history_rows() -> None:
    """[STORE-2][STORE-4] Newest first; rows that made no layer are 0."""
    assert history(seed_store(), FINAL.id) == [
        ("CMD /app/hello.sh", 0), ("COPY dir:app", 100), ('CMD ["/bin/bash"]', 0), ("RUN sed", 0),
        ("RUN mkdir -p /run/systemd", 7), ("ADD file:ubuntu", 1030),
    ]  # fmt: skip
    with pytest.raises(SpecError, match="history rows that made a layer"):
        load(Store(), "bad:1", Image(tuple(IDS[:1]), ()), [UBUNTU[0]])


def test_five_containers_and_the_seed_formula() -> None:
    """[STORE-3][STORE-4][SIZE-2][SIZE-3] Each container its own writable layer; the image counted once."""
    store = seed_store()
    for number in range(1, 6):
        name = f"my_container_{number}"
        store = create(store, name, FINAL_NAME)
        filesystem = step(store.containers[name].filesystem, Write("/app/hello.sh", 0, b"Hi" * number)).container
        store = with_filesystem(store, name, filesystem)
    sizes = [container_size(store, f"my_container_{number}") for number in range(1, 6)]
    assert [size for size, _ in sizes] == [100] * 5  # each copied hello.sh up whole
    assert {virtual for _, virtual in sizes} == {100 + 1137}
    total = sum(size for size, _ in sizes) + (sizes[0][1] - sizes[0][0])
    assert total == 5 * 100 + 1137
    usage, images_total, reclaimable = system_df(store)
    assert [(each.tags, each.size, each.shared, each.unique, each.containers) for each in usage] == [
        ((BASE_NAME,), 1137, 1137, 0, 0), ((FINAL_NAME,), 1137, 1137, 0, 5),
    ]  # fmt: skip
    # Docker's CLI takes away only the used image's unique size, 0 here: all 1137 bytes count as reclaimable.
    assert images_total == 1137 and reclaimable == 1137


def test_reclaimable_is_docker_clis() -> None:
    """[STORE-4] Reclaimable: the images' total less each used image's size less its shared size.

    By hand, as docker/cli's ``diskUsageImagesContext.Reclaimable`` works it
    out from ``LayersSize`` and each image's ``Size``, ``SharedSize`` and
    ``Containers``; not "the unique size of the images no container uses".
    """
    base = load(Store(), BASE_NAME, BASE, [*UBUNTU, APP])
    # The smallest case: a base image, one build from it (one COPY), no container.
    built = build(
        base,
        Build(
            "acme/app:1", BASE_NAME, (Instruction("COPY", (LayerEntry("/app/new", "file", 0o644, data=b"n" * 23),)),)
        ),
    )
    usage, total, reclaimable = system_df(built)
    assert [(each.tags, each.size, each.shared, each.containers) for each in usage] == [
        (("acme/app:1",), 1160, 1137, 0), ((BASE_NAME,), 1137, 1137, 0),
    ]  # fmt: skip
    assert total == 1160 and reclaimable == total  # the old rule said 23, the unique size of the unused build
    # A container on the build: its unique 23 bytes are taken away, nothing else.
    used = create(built, "c1", "acme/app:1")
    assert system_df(used)[1:] == (1160, 1160 - 23)
    # A container on the base instead: its unique size is 0, so all stays reclaimable,
    # though the base's layers would not be freed.
    assert system_df(create(built, "c1", BASE_NAME))[1:] == (1160, 1160)
    # Both used: only the build's unique size is taken away; containers' SIZEs play no part.
    both = create(create(used, "c2", BASE_NAME), "c3", "acme/app:1")
    filesystem = step(both.containers["c3"].filesystem, Write("/app/hello.sh", 0, b"Hi")).container
    assert system_df(with_filesystem(both, "c3", filesystem))[1:] == (1160, 1137)
    # Three unshared images, one used: the total less that one's size.
    other = load(Store(), "other:1", Image((IDS[3],), (HistoryRow("COPY dir:app"),)), [APP])
    other = create(load(other, BASE_NAME, BASE, [*UBUNTU, APP]), "c0", "other:1")
    assert system_df(other)[1:] == (1237, 1137)


def test_remove_and_free() -> None:
    """[STORE-1][STORE-3] rm keeps the image; rmi frees what no image holds; a used image is refused."""
    store = create(seed_store(), "c1", FINAL_NAME)
    with pytest.raises(Refused, match="used by a container") as refused:
        remove_image(store, FINAL_NAME)
    assert refused.value.kind == "image-in-use"
    store = remove_image(remove_container(store, "c1"), FINAL_NAME)
    assert len(store.layers) == 4  # the base image still holds them all
    assert len(remove_image(store, BASE_NAME).layers) == 0
    with pytest.raises(Refused, match="no image") as refused:
        create(store, "c2", FINAL_NAME)
    assert refused.value.kind == "no-such-image"


MOUNTED_IMAGE = (
    LayerEntry("/data", "dir", 0o755), LayerEntry("/data/f", "file", 0o644, data=b"f"),
    LayerEntry("/srv", "dir", 0o755), LayerEntry("/srv/readme", "file", 0o644, data=b"r"),
    LayerEntry("/file", "file", 0o644, data=b"x"), LayerEntry("/dir", "dir", 0o755),
    LayerEntry("/dir/in", "file", 0o644, data=b"i"),
)  # fmt: skip
MOUNTS = (("/data", "v1"), ("/data/inner", "v4"), ("/new", "v3"), ("/srv", "v2"))
"""Volumes on the image's directories, one in another, and one where the image has nothing."""


def mounted_store() -> Store:
    """Container ``mounted`` with ``MOUNTS`` on an image of ``MOUNTED_IMAGE``."""
    store = load(Store(), "mounts:1", Image((IDS[0],), (HistoryRow("COPY"),)), [build_layer(MOUNTED_IMAGE, "layer")])
    return create(ensure_volumes(store, [volume for _, volume in MOUNTS]), "mounted", "mounts:1", MOUNTS)


# The calls and what Docker 20.10.24 answers, each made by a static program in the
# running container on what mounted_store() holds; test_store_docker makes them on
# the engine, in this order (only the last one changes anything).
MOUNT_CASES: list[tuple[Rename | Link, str | None]] = [
    (Rename("/file", "/data/file"), "EXDEV"),  # root filesystem to a volume
    (Rename("/data/f", "/srv/f"), "EXDEV"),  # two volumes
    (Link("/data/f", "/file2"), "EXDEV"),
    (Rename("/data/inner", "/data/z"), "EBUSY"),  # a volume mounted in a volume
    (Rename("/data/f", "/data/inner/f"), "EXDEV"),
    (Rename("/data", "/x"), "EBUSY"),  # a mount point is not moved ...
    (Rename("/dir", "/data"), "EBUSY"),  # ... nor replaced
    (Rename("/file", "/srv"), "EISDIR"),  # the kinds come first
    (Rename("/file", "/new"), "EISDIR"),  # a mount point the image lacks is a directory too
    (Rename("/new", "/new"), None),  # the same name: nothing happens
    (Rename("/", "/data"), "EBUSY"),  # the root is no last name (a state machine's op; traces cannot say "/")
    (Rename("/data/f", "/"), "EXDEV"),  # ... but the mounts come first
    (Link("/file", "/"), "EEXIST"),
    (Rename("/data/f", "/data"), "EXDEV"),  # onto the mount point from inside: two directories, two mounts
    (Rename("/missing", "/data/x"), "EXDEV"),  # a missing name: the mounts come first
    (Rename("/nodir/x", "/data/x"), "ENOENT"),  # a missing directory comes before the mounts
    (Rename("/file/x", "/srv/x"), "ENOTDIR"),
    (Rename("/file", "/srv/nodir/x"), "ENOENT"),
    (Link("/missing", "/data/x"), "ENOENT"),  # a link's source is walked first
    (Link("/file", "/data"), "EEXIST"),  # then its target, a mount point included
    (Link("/file", "/srv/readme"), "EEXIST"),  # before the mounts
    (Link("/data", "/x"), "EXDEV"),  # a volume's path is the volume's root
    (Link("/dir", "/data/d"), "EXDEV"),  # before EPERM for a directory
    (Link("/dir", "/dir2"), "EPERM"),  # one mount: the filesystem level answers
    (Rename("/data/f", "/data/g"), None),  # within one volume
]


def case_id(op: Rename | Link) -> str:
    return f"{type(op).__name__.lower()} {op.src} {op.dst}"


@pytest.mark.parametrize(("op", "errno"), MOUNT_CASES, ids=[case_id(op) for op, _ in MOUNT_CASES])
def test_renames_and_links_meet_the_mounts(op: Rename | Link, errno: str | None) -> None:
    """[STORE-11][STORE-9] The walks, a link's taken name, two mounts, a mount point, then the filesystem level."""
    store = mounted_store()
    after, outcome = run_op(store, "mounted", op)
    assert outcome == (Ok() if errno is None else errno)
    if errno is not None:
        assert after == store


def test_a_rename_within_a_volume_changes_only_the_volume() -> None:
    """[STORE-11][STORE-9] Made in the volume: the writable layer is untouched."""
    store = mounted_store()
    after, outcome = run_op(store, "mounted", Rename("/data/f", "/data/g"))
    assert outcome == Ok()
    assert after.containers["mounted"] == store.containers["mounted"]
    assert run_op(after, "mounted", Stat("/data/g"))[1] != "ENOENT"
    assert run_op(after, "mounted", Stat("/data/f"))[1] == "ENOENT"


def test_refusals_have_kinds() -> None:
    """[STORE-12] Each refusal names its kind; a volume is made again without complaint."""
    store = mounted_store()
    loop = build_layer((LayerEntry("/loop", "symlink", 0o777, target="loop"),), "layer")
    looped = load(store, "loop:1", Image((IDS[1],), (HistoryRow("COPY"),)), [loop])
    cases: list[tuple[Callable[[], object], str]] = [
        (lambda: create(store, "x", "mounts:1"), "invalid-name"),
        (lambda: create(store, "mounted", "mounts:1"), "name-in-use"),
        (lambda: create(store, "other", "nothing:1"), "no-such-image"),
        (lambda: store.container("nobody"), "no-such-container"),
        (lambda: remove_volume(store, "v9"), "no-such-volume"),
        (lambda: remove_volume(store, "v1"), "volume-in-use"),
        (lambda: remove_image(store, "mounts:1"), "image-in-use"),
        (lambda: create(store, "file", "mounts:1", (("/file", "v1"),)), "volume-on-non-directory"),
        (lambda: create(looped, "loop", "loop:1", (("/loop/x", "v1"),)), "volume-on-symlink-loop"),
    ]
    for attempt, kind in cases:
        with pytest.raises(Refused) as refused:
            attempt()
        assert refused.value.kind == kind
    assert {kind for _, kind in cases} == REFUSAL_KINDS
    assert create_volume(store, "v1") == store


def test_a_step_gives_a_value_done_refused_or_rejected() -> None:
    """[STORE-5][STORE-12] ``take_step`` says what became of a step as a value; the format only encodes it."""
    from cowspec.fs.calls import Mkdir, Ok
    from cowspec.store.steps import CreateContainer, Done, LoadImage, Refusal, Rejected, RemoveImage, RunOps, take_step

    store, done = take_step(Store(), LoadImage("a:1", ((LayerEntry("/f", "file", 0o644),),), (HistoryRow("a"),)))
    assert done == Done()
    store, done = take_step(store, CreateContainer("c1", "a:1"))
    assert done == Done()
    store, ran = take_step(store, RunOps("c1", (Mkdir("/d", 0o755), Mkdir("/d", 0o755))))
    assert ran == Done((Ok(), "EEXIST"))
    after, refusal = take_step(store, RemoveImage("a:1"))
    assert isinstance(refusal, Refusal) and refusal.kind == "image-in-use" and after == store
    bad = LayerEntry("/g", "file", 0o644)
    after, rejected = take_step(store, LoadImage("b:1", ((bad, bad),), (HistoryRow("b"),)))
    assert isinstance(rejected, Rejected) and "duplicate path" in rejected.reason and after == store


def test_the_same_build_twice_is_one_image_with_two_tags() -> None:
    """[STORE-8][STORE-7] The build cache: the same instructions on the same base make the very same image.

    Found by the store machine against Docker (conformance/cowcheck/vector_set/found/store-build-cache.json
    holds the case).
    """
    from cowspec.store.steps import Build, Instruction, LoadImage, take_step

    copy = Instruction("COPY", entries=(LayerEntry("/a", "file", 0o644, data=b"/a"),))
    store, _ = take_step(Store(), LoadImage("img1:1", ((LayerEntry("/x", "dir", 0o755),),), (HistoryRow("x"),)))
    store, _ = take_step(store, Build("img2:1", "img1:1", (copy,)))
    store, _ = take_step(store, Build("img4:1", "img1:1", (copy,)))
    assert store.tags["img2:1"] == store.tags["img4:1"]
    store, _ = take_step(store, Build("img5:1", "img1:1", (copy, Instruction("CMD", text="sh"))))
    assert store.tags["img5:1"] != store.tags["img2:1"]
