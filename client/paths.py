"""Lazy, deterministic enumeration of the image files under the paths a user gives.

Directories are walked one at a time, each listed in name order (streamed in the
file system's order when it holds more than ``SORTED_LISTING_LIMIT`` entries), so
memory does not grow with the number of files. Symbolic links
are followed only while they stay inside the given roots, unless the caller
allows otherwise; directory cycles are cut. Each file is yielded once. What the
walk will not read (a link leading outside, a folder it cannot list) is still
yielded, as an :class:`Input` refused with its :class:`~facialattr.decoding.DecodeError`, so the
output accounts for it as an error row.
Each file found in a folder carries its :class:`Listing`, so the rule holds when the file
is opened too: a name swapped for a link (or another file) after listing is not read.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from facialattr.decoding import DecodeError
from facialattr.errors import ErrorKind
from facialattr.imagefiles import is_image_name

log = logging.getLogger(__name__)

# Folders up to this many entries are listed in name order (about 25 MB of entries at most);
# bigger ones are streamed in the file system's order, so memory stays bounded.
SORTED_LISTING_LIMIT = 100_000


@dataclass
class WalkStats:
    """What the walk left out, so a summary can say so."""

    skipped_symlinks: int = 0
    skipped_duplicates: int = 0
    unreadable_dirs: list[str] = field(default_factory=list)
    empty_roots: list[str] = field(default_factory=list)  # given folders that held no image at all


@dataclass(frozen=True, slots=True)
class Listing:
    """The file a folder walk found at a name, so reading it can check that it is still that file.

    The walk decides at listing time whether a name may be read (a link leading outside the
    given folders may not); a name swapped for a link afterwards must not slip through.
    ``via_link``: the name was a link the walk chose to follow; otherwise the reader opens it
    without following one (O_NOFOLLOW). ``device`` is None where it is not compared (a file
    system mounted on several machines numbers its device differently on each).
    """

    device: int | None
    inode: int
    via_link: bool = False

    def same_file(self, st: os.stat_result) -> bool:
        """True when ``st`` (an fstat of what was opened) is the file listed."""
        return st.st_ino == self.inode and (self.device is None or st.st_dev == self.device)


@dataclass(frozen=True, slots=True)
class Input:
    """One input of a run: a path to read, or (``refused`` set) a name that becomes an error row as it is.

    ``refused``: the error the input's row reports, made when the walk refused it and passed on
    unchanged. ``listed``: what the folder walk saw at the name (None for a file given by name, which
    is read as it is).
    """

    path: str
    refused: DecodeError | None = None
    listed: Listing | None = None

    @classmethod
    def refusal(cls, path: str, reason: str, *, kind: ErrorKind) -> Input:
        """An input that will not be read: ``refused`` is the :class:`DecodeError` naming ``path``."""
        return cls(path, DecodeError(path, reason, kind=kind))

    def __fspath__(self) -> str:
        return self.path


def as_input(item: Input | os.PathLike | str) -> Input:
    """An :class:`Input` for anything a caller may pass as one (plain paths are to be read)."""
    return item if isinstance(item, Input) else Input(os.fsdecode(item))


def iter_inputs(
    paths: Iterable[os.PathLike | str],
    *,
    recursive: bool = False,
    follow_symlinks: bool = False,
    stats: WalkStats | None = None,
    warn: bool = True,
) -> Iterator[Input]:
    """Image files under ``paths``: files given explicitly always, directories by image suffix.

    A given path that does not exist is still yielded, so it becomes an error row
    naming it rather than vanishing. ``warn=False`` keeps folders that cannot be listed
    out of the log (a walk that only counts, before the one that scores and warns).
    """
    paths = [os.fsdecode(p) for p in paths]
    stats = stats if stats is not None else WalkStats()
    roots = [os.path.realpath(p) for p in paths if os.path.isdir(p)]
    # Only overlapping arguments can name a file twice; one root needs no memory of what it yielded.
    seen: set[str] | None = set() if len(paths) > 1 else None
    for path in paths:
        if os.path.isdir(path):
            found, duplicates_before = 0, stats.skipped_duplicates
            for item in _walk(path, roots, seen, stats, recursive=recursive, follow_symlinks=follow_symlinks, warn=warn):
                found += 1
                yield item
            if not found and stats.skipped_duplicates == duplicates_before:
                stats.empty_roots.append(path)
        elif _first_time(path, seen, stats):
            yield Input(path)


def _first_time(path: str, seen: set[str] | None, stats: WalkStats) -> bool:
    if seen is None:
        return True
    key = os.path.normpath(path)
    if key in seen:
        stats.skipped_duplicates += 1
        return False
    seen.add(key)
    return True


def _listing(entry: os.DirEntry) -> Listing | None:
    """The file at a listed name: the link's target for a link the walk follows, else the entry itself.

    None when it cannot be looked at (a dangling link, no permission): reading it then fails and says why.
    """
    via_link = entry.is_symlink()
    try:
        st = entry.stat(follow_symlinks=via_link)
    except OSError:
        return None
    return Listing(st.st_dev, st.st_ino, via_link)


def _inside(real: str, roots: list[str]) -> bool:
    return any(real == root or real.startswith(root.rstrip(os.sep) + os.sep) for root in roots)


def _entries(directory: str, *, warn: bool) -> Iterable[os.DirEntry]:
    """A folder's entries, sorted by name; a huge folder is streamed in directory order instead."""
    with os.scandir(directory) as it:
        # One past the limit: a folder of exactly SORTED_LISTING_LIMIT entries is still sorted, as documented.
        head = list(itertools.islice(it, SORTED_LISTING_LIMIT + 1))
        if len(head) <= SORTED_LISTING_LIMIT:
            return sorted(head, key=lambda e: e.name)
    return _stream(directory, warn=warn)


def _stream(directory: str, *, warn: bool) -> Iterator[os.DirEntry]:
    # Rescanned rather than kept open: the first pass only learned that the folder is huge.
    try:
        with os.scandir(directory) as it:
            yield from it
    except OSError as exc:
        if warn:
            log.error("listing %s failed part-way: %s; files after that point are not scored", directory, exc)


def _walk(top: str, roots: list[str], seen: set[str] | None, stats: WalkStats, *, recursive: bool, follow_symlinks: bool,
          warn: bool) -> Iterator[Input]:
    visited_dirs = {os.path.realpath(top)}
    stack = [top]
    while stack:
        directory = stack.pop()
        try:
            entries = _entries(directory, warn=warn)
        except OSError as exc:
            # An error row, so the output accounts for what could not be looked at (e.g. a path over PATH_MAX).
            if warn:
                log.warning("cannot list %s: %s", directory, exc.strerror or exc)
            stats.unreadable_dirs.append(directory)
            yield Input.refusal(directory, f"cannot list folder: {exc.strerror or exc}", kind=ErrorKind.UNREADABLE)
            continue
        subdirs = []
        for entry in entries:
            if entry.name.startswith("."):
                continue  # hidden files, including macOS "._x.jpg" resource forks
            try:
                is_dir = entry.is_dir()
            except OSError:
                is_dir = False
            wanted = recursive if is_dir else is_image_name(entry.name)
            if not wanted or not _first_time(entry.path, seen, stats):
                continue
            if entry.is_symlink() and not follow_symlinks and not _inside(os.path.realpath(entry.path), roots):
                stats.skipped_symlinks += 1
                yield Input.refusal(entry.path, "symbolic link leads outside the given folders; not followed "
                                    "(--follow-symlinks to include it)", kind=ErrorKind.OUTSIDE_ROOTS)
            elif not is_dir:
                yield Input(entry.path, listed=_listing(entry))
            elif (real := os.path.realpath(entry.path)) not in visited_dirs:
                visited_dirs.add(real)
                subdirs.append(entry.path)
        # Reversed onto the stack so subfolders are visited in name order.
        stack.extend(reversed(subdirs))
