"""Overlay features in force, as explicit configuration.

The kernel's overlayfs changes behaviour with mount options. The model takes
them as a value rather than guessing [FEATURE-1]. Docker's overlay2 driver
mounts with all three off; that configuration is the default and every
implementation must support it. All three are modelled: ``redirect_dir``
(the REDIRECT rules of chapter 8), ``index`` (INDEX) and ``metacopy``
(METACOPY). A feature the model does not know is refused with a clear error
rather than answered wrongly [FEATURE-2], and so is a combination the kernel
refuses to mount, with the kernel's reason [FEATURE-3].
"""

from dataclasses import dataclass

from cowspec.errors import SpecError

KNOWN = ("redirect_dir", "index", "metacopy")
MODELLED = frozenset(KNOWN)

METACOPY_NEEDS_REDIRECT = (
    "feature 'metacopy' needs 'redirect_dir' on: the kernel refuses the mount"
    " (overlayfs: conflicting options: metacopy=on,redirect_dir=follow)"
)
"""The one line a refused combination gives [FEATURE-3]: Linux 6.18 logs the
quoted reason for ``metacopy=on,redirect_dir=off`` (off still follows)."""


@dataclass(frozen=True, slots=True)
class Features:
    """Overlay mount features; all off is Docker's overlay2 configuration."""

    redirect_dir: bool = False
    index: bool = False
    metacopy: bool = False

    def enabled(self) -> tuple[str, ...]:
        """Names of the features that are on, in a fixed order."""
        return tuple(name for name in KNOWN if getattr(self, name))


DOCKER_OVERLAY2 = Features()


def opaque_new_dirs(features: Features) -> bool:
    """True if a new directory in a merged one is made opaque: with any of
    the three features on, the kernel no longer allows offline changes to
    the layers, and marks it so [REDIRECT-4]."""
    return features.redirect_dir or features.index or features.metacopy


def refusal(features: Features) -> str | None:
    """Why the kernel refuses to mount with ``features``, or None if it mounts [FEATURE-3]."""
    if features.metacopy and not features.redirect_dir:
        return METACOPY_NEEDS_REDIRECT
    return None


def features_from(flags: dict[str, bool]) -> Features:
    """Checked ``Features`` from a name-to-flag map [FEATURE-2][FEATURE-3]."""
    for name, value in flags.items():
        if name not in KNOWN:
            raise SpecError(f"unknown feature {name!r} (known: {', '.join(KNOWN)})")
        if not isinstance(value, bool):
            raise SpecError(f"feature {name!r} must be true or false")
    features = Features(**flags)
    reason = refusal(features)
    if reason is not None:
        raise SpecError(reason)
    return features


ACCEPTED = tuple(
    Features(redirect_dir=redirect_dir, index=index, metacopy=metacopy)
    for redirect_dir in (False, True)
    for index in (False, True)
    for metacopy in (False, True)
    if refusal(Features(redirect_dir=redirect_dir, index=index, metacopy=metacopy)) is None
)
"""Every combination the kernel mounts, all off first [FEATURE-3]."""
