"""Chapter 8: overlay features are configuration."""

import pytest

from cowspec.errors import SpecError
from cowspec.formats.trace import decode_trace
from cowspec.fs.features import ACCEPTED, DOCKER_OVERLAY2, Features, features_from, refusal


def test_docker_configuration_is_the_default() -> None:
    """[FEATURE-1]"""
    assert DOCKER_OVERLAY2.enabled() == ()
    assert features_from({}) == DOCKER_OVERLAY2
    assert features_from({"index": False, "redirect_dir": False, "metacopy": False}) == DOCKER_OVERLAY2
    assert decode_trace({"format": "cowspec-trace/1", "layers": [], "ops": []}).features == DOCKER_OVERLAY2


def test_every_feature_is_modelled() -> None:
    """[FEATURE-2][REDIRECT-1][INDEX-1][METACOPY-1]"""
    assert features_from({"redirect_dir": True}).enabled() == ("redirect_dir",)
    assert features_from({"index": True}).enabled() == ("index",)
    assert features_from({"redirect_dir": True, "metacopy": True}).enabled() == ("redirect_dir", "metacopy")
    assert features_from({"redirect_dir": True, "index": True, "metacopy": True}).enabled() == (
        "redirect_dir",
        "index",
        "metacopy",
    )


@pytest.mark.parametrize("flags", [{"metacopy": True}, {"metacopy": True, "index": True}])
def test_metacopy_without_redirect_dir_is_refused_with_the_kernels_reason(flags: dict[str, bool]) -> None:
    """[FEATURE-3] Linux 6.18 refuses the mount: conflicting options: metacopy=on,redirect_dir=follow."""
    with pytest.raises(SpecError, match="conflicting options: metacopy=on,redirect_dir=follow") as caught:
        features_from(flags)
    assert "\n" not in str(caught.value)
    with pytest.raises(SpecError, match="needs 'redirect_dir'"):
        decode_trace({"format": "cowspec-trace/1", "features": flags, "layers": [], "ops": []})


def test_the_accepted_combinations_are_the_kernels() -> None:
    """[FEATURE-3] Six of the eight combinations mount; the two with metacopy and no redirect_dir do not."""
    assert len(ACCEPTED) == 6
    assert ACCEPTED[0] == DOCKER_OVERLAY2
    assert all(refusal(features) is None for features in ACCEPTED)
    assert Features(metacopy=True) not in ACCEPTED
    assert Features(index=True, metacopy=True) not in ACCEPTED


def test_unknown_or_malformed_feature() -> None:
    """[FEATURE-2][TRACE-1]"""
    with pytest.raises(SpecError, match="unknown feature 'xino'"):
        features_from({"xino": True})
    with pytest.raises(SpecError, match="true or false"):
        features_from({"index": "off"})  # type: ignore[dict-item]  # a string where a bool belongs: the error is the point
