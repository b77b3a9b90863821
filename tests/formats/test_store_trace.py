"""Chapter 15: store traces, on the model and on a real Docker engine."""

import json
import os
from pathlib import Path
from typing import Any, cast

import pytest

from cowcheck.cli.main import main
from cowspec.errors import SpecError
from cowspec.formats.store_trace import apply_step, decode_store_trace, run_store_model
from cowspec.fs.build import LayerEntry
from cowspec.fs.observe import Entry
from cowspec.store.state import HistoryRow, Store
from cowspec.store.steps import LoadImage

VECTORS = Path(__file__).resolve().parents[2] / "conformance" / "cowcheck" / "vector_set" / "found"
VECTOR = VECTORS / "store-seed-walkthrough.json"
STORE_VECTORS = sorted(VECTORS.glob("store-*.json"))


def test_model_figures_of_the_walkthrough() -> None:
    """[STORE-5][STORE-4][STORE-1] Two images on one chain, a commit, three containers."""
    result: Any = run_store_model(decode_store_trace(json.loads(VECTOR.read_text())))
    assert result["layers"] == 3
    assert result["images"] == {
        "acme/final:1.0": {"size": 30, "history": [0, 3, 0, 27], "shared_size": 30, "containers": 2},
        "acme/snap:1": {"size": 52, "history": [22, 0, 3, 0, 27], "shared_size": 30, "containers": 1},
    }
    assert result["containers"] == {
        "c1": {"size": 22, "virtual_size": 52}, "c2": {"size": 0, "virtual_size": 30},
        "c4": {"size": 5, "virtual_size": 57},
    }  # fmt: skip
    # 52 less snap's unique 22 (final's is 0): Docker printed 30B (57%) for this trace [STORE-4]
    assert (result["images_total"], result["reclaimable"]) == (52, 30)
    ops = result["steps"][4]["results"]
    assert ops[-1] == {"errno": "EXDEV"}  # renaming an image directory, as on the kernel


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ([{"step": "boot"}], "unknown step 'boot'"),
        ([{"step": "image", "name": "A:1", "layers": []}], "not a lower-case"),
        ([{"step": "create", "container": "", "image": "a"}], "non-empty string"),
        (
            [{"step": "build", "name": "b", "from": "a", "instructions": [{"instruction": "ADD"}]}],
            "unknown instruction",
        ),
        (
            [{"step": "build", "name": "b", "from": "a", "instructions": [{"instruction": "COPY", "entries": []}]}],
            "at least one entry",
        ),
        (
            [{"step": "image", "name": "a", "layers": [[]], "history": [{"created_by": "a"}, {"created_by": "b"}]}],
            "2 history rows made a layer, but there are 1 layers",
        ),
        (
            [
                {
                    "step": "image",
                    "name": "a",
                    "layers": [[{"path": "/f", "type": "file"}, {"path": "/f/x", "type": "file"}]],
                }
            ],
            "lies below the file '/f'",
        ),
    ],
)
def test_refused_store_traces(steps: list[object], message: str) -> None:
    """[STORE-5][STORE-2][STORE-12] A malformed trace, a malformed image included, is rejected whole."""
    with pytest.raises(SpecError, match=message):
        decode_store_trace({"format": "cowspec-store-trace/1", "steps": steps})


def test_oracle_and_wrong_driver(capsys: pytest.CaptureFixture[str]) -> None:
    """[STORE-5] The oracle answers store traces; the kernel driver refuses them with one line."""
    assert main(["oracle", str(VECTOR)]) == 0
    assert json.loads(capsys.readouterr().out)["layers"] == 3
    assert main(["run", "--driver", "kernel-overlay", str(VECTOR)]) == 2
    assert capsys.readouterr().err.endswith(
        "a store trace (cowspec-store-trace/1) needs a store driver; --driver kernel-overlay serves the filesystem"
        " level\n"
    )


def test_commit_of_an_unchanged_container_adds_no_layer() -> None:
    """[STORE-6] The empty commit is a history row; a commit with a new directory is a layer."""
    result: Any = run_store_model(decode_store_trace(json.loads((VECTORS / "store-commit-unchanged.json").read_text())))
    assert result["layers"] == 2
    assert result["images"]["img3:1"]["history"] == [0, 0]
    assert result["images"]["img5:1"]["history"] == [0, 0, 0]


def test_build_adds_layers_and_rows() -> None:
    """[STORE-8][STORE-6][STORE-2] COPY and RUN add layers, a RUN that changes nothing and CMD/ENV add rows."""
    result: Any = run_store_model(decode_store_trace(json.loads((VECTORS / "store-build.json").read_text())))
    assert result["steps"][1] == {"ok": True}
    final = result["images"]["acme/my-final-image:1.0"]
    # newest first: CMD, ENV, the empty RUN, RUN (/var/log, 9 bytes), COPY (29 + a 6-byte symlink), base rows
    assert final["history"] == [0, 0, 0, 9, 35, 0, 28]
    assert (result["layers"], final["size"], final["shared_size"]) == (3, 72, 28)
    assert result["containers"]["my_container_2"] == {"size": 38, "virtual_size": 110}


def test_volumes_bypass_the_writable_layer() -> None:
    """[STORE-9] Filled from the image, shared, outside every SIZE, EXDEV across, kept after rm."""
    result: Any = run_store_model(decode_store_trace(json.loads((VECTORS / "store-volumes.json").read_text())))
    assert result["steps"][4]["results"][-1] == {"errno": "EXDEV"}
    assert result["steps"][5]["results"][0] == {"ok": True, "value": "MTIzNDU2Nzg5MA=="}  # w1's write, seen by w2
    assert result["steps"][8] == {"ok": False, "refusal": "volume-in-use", "reason": "volume 'shared' is in use"}
    assert result["containers"] == {"w2": {"size": 0, "virtual_size": 17}}
    # seed.txt and its hardlink once (10) + w1's file (10); readme (7) filled into the new volume
    assert result["volumes"] == {"empty": {"size": 7, "containers": 1}, "shared": {"size": 20, "containers": 1}}


def test_tags_parents_and_dangling_images() -> None:
    """[STORE-10][STORE-7] Tags move, children keep untagged parents, rmi removes childless ones."""
    result: Any = run_store_model(decode_store_trace(json.loads((VECTORS / "store-tags-and-parents.json").read_text())))
    assert [step["ok"] for step in result["steps"]] == [True, True, False] + [True] * 12
    assert result["layers"] == 3  # a's, b's and the commit's: the dangling commit still holds two
    assert result["images"] == {"a:1": {"size": 1, "history": [1], "shared_size": 0, "containers": 1}}
    assert (result["images_total"], result["reclaimable"]) == (7, 6)  # the dangling commit image is reclaimable


def test_refusals_name_their_kind() -> None:
    """[STORE-12][STORE-9] Every refusal of the vector has its kind; a refused step changes nothing."""
    result: Any = run_store_model(decode_store_trace(json.loads((VECTORS / "store-refusals.json").read_text())))
    steps = cast(list[Entry], result["steps"])
    kinds = [step.get("refusal", "ok" if step["ok"] else None) for step in steps]
    assert kinds == [
        "ok", "ok", "name-in-use", "invalid-name", "no-such-image", "volume-on-non-directory", "ok", "ok", "ok",
        "volume-in-use", "no-such-volume", "no-such-container", "no-such-container", "no-such-container",
        "no-such-image", "image-in-use", "no-such-image", "ok", "ok", "ok", "volume-on-symlink-loop",
    ]  # fmt: skip
    assert not any(step.get("rejected") for step in steps)
    assert result["containers"] == {"c1": {"size": 0, "virtual_size": 2}}
    # made before c3 and c5 were refused
    assert result["volumes"] == {"vf": {"size": 0, "containers": 0}, "vl": {"size": 0, "containers": 0}}


def test_a_rejected_step_is_not_a_refusal() -> None:
    """[STORE-12][STORE-2] Input the spec rejects while a step runs is marked rejected, with no kind."""
    bad = LayerEntry("/f", "file", 0o644)
    store, item = apply_step(Store(), LoadImage("a:1", ((bad, bad),), (HistoryRow("a"),)))
    assert item["ok"] is False and item["rejected"] is True and "refusal" not in item
    assert "duplicate path" in str(item["reason"])
    assert store == Store()


@pytest.mark.parametrize("vector", STORE_VECTORS, ids=[each.stem for each in STORE_VECTORS])
def test_docker_agrees_with_the_model(vector: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """[STORE-5][STORE-4][STORE-6] ``cowspec check --driver docker``: every figure equal, to the byte."""
    if not os.path.exists("/usr/sbin/dockerd") and os.environ.get("CI") != "true":
        pytest.skip("dockerd is not installed")
    status = main(["check", "--driver", "docker", str(vector)])
    out = capsys.readouterr().out
    assert status == 0, out
    result = json.loads(out)
    assert result["agrees"] is True and result["differences"] == []
    assert result["layers"] > 0


def test_store_machine_against_docker() -> None:
    """[STORE-1][STORE-4][STORE-5][STORE-6] Random steps; every figure after every step, on a real engine."""
    from hypothesis.stateful import run_state_machine_as_test

    from cowcheck.drivers.engines import Dockerd
    from cowcheck.drivers.protocol import DriverUnavailable
    from cowcheck.machines import profiles
    from cowcheck.machines.store_machine import store_machine_for

    budget = profiles.store_machine()  # its budget under the chosen profile, from the one module of profiles
    try:
        with Dockerd() as docker:
            run_state_machine_as_test(store_machine_for(docker), settings=budget)
    except DriverUnavailable as error:
        if os.environ.get("CI") == "true":
            pytest.fail(str(error))
        pytest.skip(str(error))


def test_demo_from_the_model_and_an_engine(capsys: pytest.CaptureFixture[str]) -> None:
    """[STORE-4][STORE-1] The seed's walk-through: shared layers, five containers, copy-up sizes, agreement."""
    if not os.path.exists("/usr/sbin/dockerd") and os.environ.get("CI") != "true":
        assert main(["demo"]) == 0
        pytest.skip("dockerd is not installed: model only")
    assert main(["demo", "--engine"]) == 0
    out = capsys.readouterr().out
    assert out.count("-- agreement: every figure equal") == 2
    assert "my_container_5      37B (virtual 1.11kB)" in out
    assert "disk for the five: 185B of writable layers + 1.07kB of image, once = 1.26kB; layers stored: 4" in out


def test_volume_over_a_file_is_refused_after_the_volume_is_made() -> None:
    """[STORE-9] Docker makes the named volume, then refuses to mount it over a file."""
    steps = [
        {"step": "image", "name": "f:1", "layers": [[{"path": "/a", "type": "file", "data": "eA=="}]]},
        {"step": "create", "container": "c1", "image": "f:1", "volumes": {"/a": "v", "/b": "v"}},
        {"step": "create", "container": "d1", "image": "f:1", "volumes": {"/x": "w", "/y": "w"}},
    ]
    result: Any = run_store_model(decode_store_trace({"format": "cowspec-store-trace/1", "steps": steps}))
    assert result["steps"][1]["ok"] is False and "not a directory" in result["steps"][1]["reason"]
    assert result["steps"][1]["refusal"] == "volume-on-non-directory"
    # v stays though its container was refused; d1 mounts w twice, and counts once
    assert result["volumes"] == {"v": {"size": 0, "containers": 0}, "w": {"size": 0, "containers": 1}}


def test_a_trace_s_engine_is_decoded_and_checked() -> None:
    """[DRIVER-1][DRIVER-7] ``storage_driver``, ``directory_size`` and ``block_size`` are optional; absent, they
    are Docker's overlay2 on ext4; a bad value rejects the trace in one line naming the field."""
    from cowspec.formats.store_trace import decode_store_config
    from cowspec.store.drivers import StoreConfig

    assert decode_store_config({"format": "cowspec-store-trace/1", "steps": []}) == StoreConfig("overlay2", 4096, 4096)
    assert decode_store_config({"storage_driver": "btrfs", "directory_size": 0}) == StoreConfig("btrfs", 0, 4096)
    for fields, named in (
        ({"storage_driver": "devicemapper"}, "storage_driver"),
        ({"directory_size": "4096"}, "directory_size"),
        ({"block_size": 0}, "block_size"),
    ):
        with pytest.raises(SpecError, match=named) as raised:
            decode_store_config(fields)
        assert str(raised.value).startswith("store trace: ") and "\n" not in str(raised.value)


def test_an_old_result_allows_its_own_figures_only() -> None:
    """[DRIVER-6] A result without ``alternatives`` (every result before them) allows one set of figures."""
    from cowspec.formats.store_trace import FIGURES, allowed_figures

    old = {"format": "cowspec-store-trace-result/1", "steps": [], "layers": 1, "images": {}, "containers": {},
           "images_total": 0, "reclaimable": 0, "volumes": {}}  # fmt: skip
    assert allowed_figures(old) == [{key: old[key] for key in FIGURES if key in old}]


def test_disk_figures_missing_out_of_range_or_malformed() -> None:
    """[DRIVER-7] Once an engine gives its bytes on disk, every figure the model states is compared: one it leaves
    out is a difference, a range must lie within the model's at both ends, and a malformed one is one line."""
    from cowspec.errors import SpecError
    from cowspec.formats.store_trace import disk_differences

    model = {
        "containers": {"c1": {"apparent": {"min": 10, "max": 20}}},
        "layers": {"allocated": {"min": 4096, "max": 4096}},
    }
    agreeing = {"containers": {"c1": {"apparent": 15}}, "layers": {"allocated": {"min": 4096, "max": 4096}}}
    assert disk_differences(model, agreeing) == []
    assert disk_differences(model, {"containers": {}, "layers": {"allocated": 4096}}) == [
        "disk c1 apparent: model 10..20, real (none)"
    ]
    assert disk_differences(model, {"containers": {"C1": {"apparent": 15}}, "layers": {"allocated": 4096}}) == [
        "disk c1 apparent: model 10..20, real (none)"
    ]
    wide = {"containers": {"c1": {"apparent": {"min": 15, "max": 99}}}, "layers": {"allocated": 4096}}
    assert disk_differences(model, wide) == ["disk c1 apparent: model 10..20, real 15..99"]
    assert disk_differences(model, {"containers": {"c1": {"apparent": 15}}}) == [
        "disk (layers) allocated: model 4096..4096, real (none)"
    ]
    malformed_ones: list[object] = [
        {"containers": {"c1": 5}},
        {"containers": []},
        {"containers": {"c1": {"apparent": "x"}}},
        [1],
    ]
    for malformed in malformed_ones:
        with pytest.raises(SpecError):
            disk_differences(model, malformed)


def test_the_clock_is_tried_where_it_matters_however_long_the_trace() -> None:
    """[DRIVER-6] Twelve commits of different deletions, then a thirteenth of the same deletion as the twelfth on
    the same parent: the last two are one layer if made within one second, whatever came before (the oracle
    used to try only the first ten gaps, and missed it)."""
    from cowspec.formats.store_trace import decode_store_config, decode_store_trace, run_store_model

    files = [{"path": f"/f{number}", "type": "file", "mode": 420, "data": "eA=="} for number in range(12)]
    steps: list[dict[str, object]] = [{"step": "image", "name": "base:1", "layers": [files]}]
    for number in range(13):
        deleted = f"/f{min(number, 11)}"
        steps += [
            {"step": "create", "container": f"c{number}", "image": "base:1"},
            {"step": "ops", "container": f"c{number}", "ops": [{"op": "unlink", "path": deleted}]},
            {"step": "commit", "container": f"c{number}", "name": f"s{number}:1"},
        ]
    document = {"format": "cowspec-store-trace/1", "storage_driver": "vfs", "steps": steps}
    result = run_store_model(decode_store_trace(document), decode_store_config(document))
    assert result["layers"] == 14
    alternatives = result["alternatives"]
    assert isinstance(alternatives, list)
    assert [each["layers"] for each in alternatives] == [13]
