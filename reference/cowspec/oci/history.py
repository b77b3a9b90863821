"""The image config's history, row by row against the layers [STORE-2][APPLY-11].

A config's ``history`` has one row per build step, oldest first; a row
with ``empty_layer: true`` (``ENV``, ``CMD``, ``LABEL``) made no layer, and
each other row stands for the next layer. ``docker history`` and dive pair
them the same way. History is optional metadata that no digest binds to
the layers, so a reader of images from disk pairs what there is: a layer
past the last such row has none, and rows past the last layer are left out.

The tables show a row by ``shown_command``: its ``created_by``; a row
without one (``docker import`` writes only ``created`` and ``comment``,
such as "Imported from -") shows its comment after ``# ``, as a shell
comment; a layer with no row, or a row with neither, shows ``(no history)``.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import cast


@dataclass(frozen=True, slots=True)
class HistoryRow:
    """One row of a config's history that made a layer [APPLY-11]."""

    created_by: str | None = None
    created: str | None = None
    comment: str | None = None


@dataclass(frozen=True, slots=True)
class LayerHistory:
    """Each layer's row, bottom first (None: the history has none for it), and how many rows made a layer."""

    rows: tuple[HistoryRow | None, ...]
    layer_rows: int | None
    """None when the config has no ``history`` list."""


def shown_command(row: HistoryRow | None) -> str:
    """What a table shows for a layer's history row [APPLY-11]: the command, else ``# COMMENT``, else ``(no history)``.

    An empty ``created_by`` counts as none. The text is as the image holds
    it: escaping it is the table's business.
    """
    if row is not None and row.created_by:
        return row.created_by
    if row is not None and row.comment:
        return "# " + row.comment
    return "(no history)"


def _text(row: Mapping[str, object], key: str) -> str | None:
    value = row.get(key)
    return value if isinstance(value, str) else None


def layer_history(config: object, layers: int) -> LayerHistory:
    """Pair the config's history rows with ``layers`` layers [STORE-2][APPLY-11]."""
    history = cast(Mapping[str, object], config).get("history") if isinstance(config, dict) else None
    if not isinstance(history, list):
        return LayerHistory((None,) * layers, None)
    made = [
        HistoryRow(_text(row, "created_by"), _text(row, "created"), _text(row, "comment"))
        for row in (cast(Mapping[str, object], each) for each in history if isinstance(each, dict))
        if row.get("empty_layer") is not True
    ]
    rows = tuple(made[index] if index < len(made) else None for index in range(layers))
    return LayerHistory(rows, len(made))
