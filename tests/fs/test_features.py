"""Chapter 8: overlay features are configuration."""

import pytest

from cowspec.errors import SpecError
from cowspec.formats.trace import decode_trace
from cowspec.fs.features import DOCKER_OVERLAY2, features_from


def test_docker_configuration_is_the_default() -> None:
    """[FEATURE-1]"""
    assert DOCKER_OVERLAY2.enabled() == ()
    assert features_from({}) == DOCKER_OVERLAY2
    assert features_from({"index": False, "redirect_dir": False, "metacopy": False}) == DOCKER_OVERLAY2
    assert decode_trace({"format": "cowspec-trace/1", "layers": [], "ops": []}).features == DOCKER_OVERLAY2


@pytest.mark.parametrize("name", ["index", "metacopy"])
def test_unmodelled_feature_is_refused(name: str) -> None:
    """[FEATURE-2]"""
    with pytest.raises(SpecError, match=f"feature '{name}' is not modelled"):
        features_from({name: True})


def test_redirect_dir_is_modelled() -> None:
    """[FEATURE-2][REDIRECT-1]"""
    assert features_from({"redirect_dir": True}).enabled() == ("redirect_dir",)


def test_unknown_or_malformed_feature() -> None:
    """[FEATURE-2][TRACE-1]"""
    with pytest.raises(SpecError, match="unknown feature 'xino'"):
        features_from({"xino": True})
    with pytest.raises(SpecError, match="true or false"):
        features_from({"index": "off"})  # type: ignore[dict-item]  # a string where a bool belongs: the error is the point
