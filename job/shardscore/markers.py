"""Databricks (DBIO) transactional commit markers: which task attempts' files in a dataset are valid.

A Databricks write creates `_started_<tid>` in each folder it writes to, then the data files, whose names carry
`tid-<tid>`; when the job commits it writes `_committed_<tid>`, JSON whose "added" list names the files of the task
attempts that won, relative to the marker's folder ("removed": files this commit replaced). Files of failed,
speculative or aborted attempts stay until VACUUM deletes them; Databricks' readers skip them, and so does
planning. Knows nothing of Ray or of the store: the caller lists and reads the markers.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from .errors import InputError

TID = re.compile(r"(?:^|[-_.])tid-(\d+)(?=[-_.]|$)")
#: `_started_<tid>`, `_committed_<tid>`, and `_committed_vacuum<tid>` (written by VACUUM)
MARKER = re.compile(r"_(started|committed)_(vacuum)?(\d+)")
REASON = "uncommitted Databricks task attempt"


@dataclass(frozen=True)
class Commit:
    """What one `_committed_*` marker says, its file names made relative to the dataset's root."""

    marker: str  # the marker's path relative to the dataset's root
    tid: str | None  # None for a `_committed_vacuum<tid>` marker
    added: frozenset[str]
    removed: frozenset[str]


def _marker(relpath: str) -> re.Match[str] | None:
    return MARKER.fullmatch(relpath.rpartition("/")[2])


def is_committed_marker(relpath: str) -> bool:
    match = _marker(relpath)
    return match is not None and match.group(1) == "committed"


def parse(relpath: str, shown: str, data: bytes) -> Commit:
    """A `_committed_*` marker's content; one that cannot be parsed stops the run (exit 2), naming it (`shown`):
    without it no file of its folder can be told valid or aborted."""
    folder = relpath.rpartition("/")[0]
    match = _marker(relpath)
    assert match is not None and match.group(1) == "committed", relpath
    vacuum = match.group(2) is not None
    try:
        doc = json.loads(data)
        if not isinstance(doc, dict):
            raise ValueError(f"a JSON {type(doc).__name__}, not an object")
        lists = {key: doc.get(key, [] if key == "removed" or vacuum else None) for key in ("added", "removed")}
        for key, value in lists.items():
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ValueError(f'"{key}" is {"missing" if value is None else "not a list of file names"}')
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"input: the Databricks commit marker {shown} cannot be parsed ({exc}). It says which task "
                         "attempts' files in its folder are valid, so none of them can be scored without it: restore "
                         "it, or rewrite the folder (Databricks' VACUUM removes aborted attempts' files)") from exc

    def under(names: list[str]) -> frozenset[str]:
        return frozenset(f"{folder}/{n}" if folder else n for n in names)

    return Commit(relpath, None if vacuum else match.group(3), under(lists["added"]), under(lists["removed"]))


def uncommitted(files: list[str], markers: list[str], commits: list[Commit]) -> dict[str, str]:
    """relpath -> why, for each data file that a Databricks task attempt wrote and no commit made valid.

    A file is governed by the markers when its name carries a tid and its folder holds markers, or some marker
    names its tid; files without a tid (written by another tool) are left alone.
    """
    marked_folders = {m.rpartition("/")[0] for m in markers}
    marked_tids = {match.group(3) for m in markers if (match := _marker(m)) and match.group(2) is None}
    added: dict[str, set[str]] = {}
    for commit in commits:
        if commit.tid is not None:
            added.setdefault(commit.tid, set()).update(commit.added)
    removed = {path: commit.marker for commit in commits for path in commit.removed}
    found: dict[str, str] = {}
    for rel in files:
        folder, _, name = rel.rpartition("/")
        match = TID.search(name)
        if match is None or (folder not in marked_folders and match.group(1) not in marked_tids):
            continue
        tid = match.group(1)
        if tid not in added:
            found[rel] = f"{REASON}: no _committed_{tid} marker (the job never committed it)"
        elif rel not in added[tid]:
            found[rel] = f'{REASON}: not in the "added" list of _committed_{tid} (a failed or duplicate attempt)'
        elif rel in removed:
            found[rel] = f"{REASON}: removed by {removed[rel]} (a later write replaced it)"
    return found
