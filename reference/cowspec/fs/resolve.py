"""Path resolution in the merged view, as the kernel's path walk does it.

A path given to an operation is walked component by component from the
container root [PATH-2]:

- ``.`` stays, ``..`` goes up (the root's parent is the root);
- a symlink met in an intermediate component is followed: an absolute
  target restarts from the container root, a relative one from the
  directory that holds the link [PATH-3];
- more than 40 symlinks followed in one walk give ``ELOOP`` [PATH-4];
- a missing intermediate component gives ``ENOENT``, one that is not a
  directory gives ``ENOTDIR`` [PATH-5];
- a path of ``PATH_MAX`` bytes or more, or a component looked up that is
  longer than ``NAME_MAX`` bytes, gives ``ENAMETOOLONG`` [PATH-2].

The last component is followed or not according to the call [PATH-6]:
``lstat``, ``unlink``, ``rmdir``, ``rename``, ``readlink``, ``link``,
``lchown`` and the creating calls do not follow it; ``open``, ``truncate``,
``chmod`` and ``opendir`` do. An empty symlink target gives ``ENOENT``, and a
target ending in ``/`` asks for a directory.

Each errno a walk gives comes with the rule that decided it (``Denied``), so
that a checker can say which rule a divergence breaks. ``resolve`` and
``resolve_final`` give the errno alone, for callers that need no more.
"""

from dataclasses import dataclass

from cowspec.errors import Errno
from cowspec.fs.entries import Name, SymlinkInode, Whiteout
from cowspec.fs.paths import ROOT, join, name_of, name_too_long, parent_of, path_too_long
from cowspec.fs.stack import Container, Found, inode_of, lookup, lookup_child, root_of

MAX_SYMLINKS = 40

NAME_TOO_LONG: Errno = "ENAMETOOLONG"
"""The errno of a name or path longer than Linux takes [PATH-2]."""


@dataclass(frozen=True, slots=True)
class Denied:
    """A call's failure: its errno and the ID of the spec rule that decided it.

    The rule is named where the errno is chosen, so the two cannot drift
    apart; ``rule`` is always an ID that a chapter of spec/ defines.
    """

    errno: Errno
    rule: str


@dataclass(frozen=True, slots=True)
class Resolved:
    """The end of a walk: the directory that holds the last name, the name,
    and the object there (None if absent). ``path`` is its normalised path;
    ``must_be_dir`` is set when a followed link's target ended in ``/``."""

    parent: Found
    name: str
    found: Found | None
    must_be_dir: bool = False
    links: int = 0
    """How many symlinks the walk followed [PATH-3]."""

    @property
    def path(self) -> str:
        """The normalised path of the last component."""
        return join(self.parent.path, self.name) if self.name else ROOT


def symlink_target(container: Container, found: Found) -> str | None:
    """The target of ``found`` if it is a symlink, else None."""
    if not isinstance(found.node, Name):
        return None
    inode = inode_of(container, found)
    return inode.target if isinstance(inode, SymlinkInode) else None


def _components(path: str) -> list[str]:
    return [part for part in path.split("/") if part not in ("", ".")]


def resolve(container: Container, path: str, *, follow: bool) -> Resolved | Errno:
    """Walk ``path``; ``follow`` says whether a final symlink is followed.

    The errno alone of a walk that fails; ``walk`` gives its rule as well.
    """
    resolved = walk(container, path, follow=follow)
    return resolved.errno if isinstance(resolved, Denied) else resolved


def walk(container: Container, path: str, *, follow: bool, look_up_last: bool = True) -> Resolved | Denied:
    """Walk ``path``; ``follow`` says whether a final symlink is followed.

    ``look_up_last`` false leaves the length of the last name unchecked,
    for ``rename``, which looks both last names up only after both parents
    are walked (``plan_rename``).

    [PATH-2][PATH-3][PATH-4][PATH-5][PATH-6]
    """
    if path_too_long(path):
        return Denied(NAME_TOO_LONG, "PATH-2")
    root = root_of(container)
    # The walk keeps the chain of directories it stands in, for "..".
    chain: list[Found] = [root]
    pending = list(reversed(_components(path)))
    links = 0
    must_be_dir = False
    if not pending:
        return Resolved(root, "", root)
    while True:
        name = pending.pop()
        here = chain[-1]
        last = not pending
        if name == "..":
            if len(chain) > 1:
                chain.pop()
            if last:
                return _at_directory(chain, must_be_dir, links)
            continue
        if name_too_long(name) and (look_up_last or not last):
            # The file system refuses to look the name up at all [PATH-2].
            return Denied(NAME_TOO_LONG, "PATH-2")
        found = lookup_child(container, here, name)
        target = symlink_target(container, found) if found is not None else None
        if target is not None and (not last or follow or must_be_dir):
            links += 1
            if links > MAX_SYMLINKS:
                return Denied("ELOOP", "PATH-4")
            if target == "":
                return Denied("ENOENT", "PATH-3")
            if target.startswith("/"):
                del chain[1:]
            if last:
                # A trailing slash anywhere along the chain of final links
                # asks for a directory at its end.
                must_be_dir = must_be_dir or target.endswith("/")
            parts = _components(target)
            if not parts:
                # The target names a directory itself ("/", "." and the like).
                if last:
                    return _at_directory(chain, must_be_dir, links)
                continue
            pending.extend(reversed(parts))
            continue
        if last:
            return Resolved(here, name, found, must_be_dir, links)
        if found is None:
            return Denied("ENOENT", absent_rule(container, here, name, otherwise="PATH-5"))
        if not found.is_dir:
            return Denied("ENOTDIR", "PATH-5")
        chain.append(found)


def absent_rule(container: Container, parent: Found, name: str, otherwise: str = "LOOKUP-1") -> str:
    """The rule that makes ``name`` absent from ``parent``: a whiteout that
    hides it [WHITEOUT-1], else ``otherwise`` (no layer holds it [LOOKUP-1],
    or a missing component of a walk [PATH-5])."""
    for index, where in parent.stack:
        node = container.layer(index).get(join(where, name))
        if node is not None:
            return "WHITEOUT-1" if isinstance(node, Whiteout) else otherwise
    return otherwise


def _at_directory(chain: list[Found], must_be_dir: bool, links: int) -> Resolved:
    directory = chain[-1]
    parent = chain[-2] if len(chain) > 1 else chain[-1]
    name = directory.path.rsplit("/", 1)[1] if directory.path != ROOT else ""
    return Resolved(parent, name, directory, must_be_dir, links)


def why_absent(container: Container, path: str) -> str:
    """The rule that keeps the normalised ``path`` out of the merged view,
    for a checker to name when a real system shows it: a whiteout
    [WHITEOUT-1], an opaque directory that stopped the merge [OPAQUE-1], a
    non-directory above it [LOOKUP-2], or no layer holding it [LOOKUP-1]."""
    if path == ROOT:
        return "LOOKUP-1"
    parent = lookup(container, parent_of(path))
    if parent is None:
        return why_absent(container, parent_of(path))
    if not parent.is_dir:
        return "LOOKUP-2"
    rule = absent_rule(container, parent, name_of(path))
    if rule == "LOOKUP-1" and any(layer.get(path) is not None for layer in container.lowers):
        return "OPAQUE-1"
    return rule


def absent(container: Container, resolved: Resolved) -> Denied:
    """``ENOENT`` for a walk that ends at nothing, with the rule that hid it."""
    return Denied("ENOENT", absent_rule(container, resolved.parent, resolved.name))


def resolve_final(container: Container, path: str, *, follow: bool) -> Found | Errno:
    """The object ``path`` names, or the errno of a walk that finds none."""
    found = find(container, path, follow=follow)
    return found.errno if isinstance(found, Denied) else found


def find(container: Container, path: str, *, follow: bool) -> Found | Denied:
    """The object ``path`` names, or why a walk finds none [PATH-3][PATH-5]."""
    resolved = walk(container, path, follow=follow)
    if isinstance(resolved, Denied):
        return resolved
    if resolved.found is None:
        return absent(container, resolved)
    if resolved.must_be_dir and not resolved.found.is_dir:
        return Denied("ENOTDIR", "PATH-3")
    return resolved.found
