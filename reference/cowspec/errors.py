"""The three kinds of failure the model knows.

1. ``Errno``: the answer a real system gives to a modelled call that fails.
   It is a value, named as the kernel names it (``"ENOENT"``), never a
   message, and it is part of the specified behaviour.
2. ``SpecError``: input the spec rejects, such as a malformed layer or an op
   the format does not define. It carries a one-line reason for a person.
3. ``ModelError``: a state the model says cannot happen. Raising it is a bug
   in the model, not a property of the system being modelled.
"""

from typing import Literal

Errno = Literal[
    "EBUSY",
    "EEXIST",
    "EINVAL",
    "EISDIR",
    "ELOOP",
    "ENAMETOOLONG",
    "ENOENT",
    "ENOTDIR",
    "ENOTEMPTY",
    "EPERM",
    "EXDEV",
]

ERRNOS: frozenset[str] = frozenset(Errno.__args__)  # type: ignore[attr-defined]


class SpecError(ValueError):
    """Input that the spec rejects; the message is one line for a person."""


class ModelError(AssertionError):
    """A state the model says cannot happen: a bug in the model."""
