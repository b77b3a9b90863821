"""What an image wastes, file by file, and a CI gate on it, as dive has one.

An image's bytes are its layers' own sizes (SIZE-1). A layer's bytes are
*kept* when the final root filesystem still shows them, and *wasted* when a
later layer (or the same one) takes them away [APPLY-7]. ``image_waste``
groups the wasted copies by path [APPLY-9]; ``judge`` holds the totals to
thresholds named as dive names them [APPLY-10].
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from cowspec.oci.apply import Copy, LayerStats, LayerTrace
from cowspec.oci.layer_tar import canonical_key


@dataclass(frozen=True, slots=True)
class WastedFile:
    """A path at which some layer wrote bytes the final root does not show [APPLY-9].

    ``copies`` are every inode written at the path, bottom first, the kept
    one included; ``wasted`` the bytes of those that were lost.
    """

    path: str
    copies: tuple[Copy, ...]

    @property
    def wasted(self) -> int:
        return sum(each.size for each in self.copies if each.lost_in is not None)


@dataclass(frozen=True, slots=True)
class ImageWaste:
    """An image's totals and its wasted files [APPLY-7][APPLY-9]."""

    stored: int
    """Bytes of all layers (SIZE-1), each layer's own."""
    kept: int
    """Of them, the bytes the final root filesystem shows."""
    user_stored: int
    """Bytes of the layers above layer 0 (the base image's first layer)."""
    files: tuple[WastedFile, ...]
    """Most wasted bytes first, then in path order."""

    @property
    def wasted(self) -> int:
        return self.stored - self.kept

    @property
    def efficiency(self) -> float:
        """Kept bytes over stored bytes; 1.0 for an image of no bytes [APPLY-7]."""
        return self.kept / self.stored if self.stored else 1.0

    @property
    def user_wasted_ratio(self) -> float | None:
        """Wasted bytes (any layer's) over the bytes above layer 0; None when there are none [APPLY-9]."""
        return self.wasted / self.user_stored if self.user_stored else None


def image_waste(stats: Sequence[LayerStats], traces: Sequence[LayerTrace]) -> ImageWaste:
    """The totals of ``stats`` and the wasted files of ``traces`` [APPLY-9]."""
    at: dict[str, list[Copy]] = {}
    for trace in traces:
        for copy in trace.copies:
            at.setdefault(copy.path, []).append(copy)
    files = [
        WastedFile(path, tuple(copies))
        for path, copies in at.items()
        if any(each.lost_in is not None for each in copies)
    ]
    files.sort(key=lambda each: canonical_key(each.path))
    files.sort(key=lambda each: each.wasted, reverse=True)
    stored = sum(each.size for each in stats)
    kept = sum(each.kept for each in stats)
    return ImageWaste(stored, kept, stored - (stats[0].size if stats else 0), tuple(files))


Status = Literal["pass", "fail", "skip"]
Rule = Literal["lowest-efficiency", "highest-wasted-bytes", "highest-user-wasted-percent"]


@dataclass(frozen=True, slots=True)
class Thresholds:
    """The CI gate's limits; None turns one off. The defaults are dive's [APPLY-10]."""

    lowest_efficiency: float | None = 0.9
    highest_wasted_bytes: int | None = None
    highest_user_wasted_percent: float | None = 0.1
    """A ratio, 0.1 for ten per cent, as dive takes it."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """One threshold held to the image [APPLY-10]."""

    name: Rule
    status: Status
    value: float | int | None
    threshold: float | int | None


def judge(waste: ImageWaste, limits: Thresholds) -> tuple[Verdict, ...]:
    """Each threshold's verdict, failing as dive's rules fail [APPLY-10].

    Efficiency fails below its threshold; wasted bytes and the user wasted
    ratio fail above theirs (equal passes). A threshold that is off, or a
    ratio with no bytes above layer 0, is skipped.
    """

    def verdict(name: Rule, value: float | None, limit: float | None, bad: bool) -> Verdict:
        if limit is None or value is None:
            return Verdict(name, "skip", value, limit)
        return Verdict(name, "fail" if bad else "pass", value, limit)

    efficiency, wasted, ratio = waste.efficiency, waste.wasted, waste.user_wasted_ratio
    low, high, user = limits.lowest_efficiency, limits.highest_wasted_bytes, limits.highest_user_wasted_percent
    return (
        verdict("lowest-efficiency", efficiency, low, low is not None and efficiency < low),
        verdict("highest-wasted-bytes", wasted, high, high is not None and wasted > high),
        verdict("highest-user-wasted-percent", ratio, user, user is not None and ratio is not None and ratio > user),
    )
