"""Overlay features in force, as explicit configuration.

The kernel's overlayfs changes behaviour with mount options. The model takes
them as a value rather than guessing [FEATURE-1]. Docker's overlay2 driver
mounts with all three off; that configuration is the default and every
implementation must support it. ``redirect_dir`` is modelled (the REDIRECT
rules of chapter 8). A feature the model does not state yet (``index``,
``metacopy``) is refused with a clear error rather than answered wrongly
[FEATURE-2].
"""

from dataclasses import dataclass

from cowspec.errors import SpecError

KNOWN = ("redirect_dir", "index", "metacopy")
MODELLED = frozenset({"redirect_dir"})


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


def features_from(flags: dict[str, bool]) -> Features:
    """Checked ``Features`` from a name-to-flag map [FEATURE-2]."""
    for name, value in flags.items():
        if name not in KNOWN:
            raise SpecError(f"unknown feature {name!r} (known: {', '.join(KNOWN)})")
        if not isinstance(value, bool):
            raise SpecError(f"feature {name!r} must be true or false")
        if value and name not in MODELLED:
            raise SpecError(f"feature {name!r} is not modelled yet; run with it off")
    return Features(**flags)
