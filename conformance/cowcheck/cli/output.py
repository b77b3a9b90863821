"""What every command shares: exit statuses, one-line messages, JSON output.

Exit statuses, in one place: 0 the run agreed (or the command did what it
was asked), 1 a real system diverged from the model, 2 the input was
rejected (a malformed trace or image, a bad command line), 3 the system
under test cannot run here.
"""

import contextlib
import errno
import json
import sys

EXIT_DIVERGED, EXIT_REJECTED, EXIT_UNAVAILABLE = 1, 2, 3
WRITE_FAILURES = frozenset((errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.EPIPE))


class UsageError(Exception):
    """A command line that cannot run; the message is one line."""


def one_line(text: str) -> str:
    """``text`` with every control character escaped, so that it stays one line and sets no terminal mode.

    Names from an image can hold newlines and ANSI escapes, and bytes that
    are not UTF-8 (kept as lone surrogates): each is shown as ``\\n``,
    ``\\x1b``, ``\\udc80``.
    """
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() or char == " " else repr(char)[1:-1] for char in text)


def say(message: str) -> None:
    """Print ``cowspec: MESSAGE`` on standard error, on one line."""
    with contextlib.suppress(OSError):  # standard error gone: nothing more can be said
        print(f"cowspec: {one_line(message)}", file=sys.stderr, flush=True)


def emit(document: object) -> None:
    """Print one JSON document on one line."""
    sys.stdout.write(json.dumps(document, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def write_report(path: str, text: str) -> None:
    """Write a report file, or say in one line why it cannot be written (exit 2)."""
    try:
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text)
    except OSError as error:
        raise UsageError(f"--report {path}: cannot write ({error.strerror})") from None
