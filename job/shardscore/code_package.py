"""A folder of model code as a Ray runtime_env `working_dir` zip on an object store, under a content-addressed name.

Why a name from the content: Ray keeps a remote package by its URI on every node that unpacked it
(ray/_private/runtime_env/packaging.py, `download_and_unpack_package` returns the local folder when it exists), so
code re-uploaded under the same URI runs stale, silently, on a long-lived cluster. A new name per content cannot.

Why one top folder in the zip: for remote URIs Ray unpacks with `remove_top_level_directory=True` (`unzip_package`),
which strips a single top folder. The folder's contents are put under one, so they land at the working directory's
root, as `working_dir: <local folder>` would put them.

The zip is the same bytes for the same files (sorted entries, fixed times and modes): packaging twice gives one name.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import zipfile
from dataclasses import dataclass

import pyarrow.fs as pafs

from .errors import ConfigError
from .storage import Location, write_atomic

#: Never packed: byte code and VCS folders (a worker compiles its own; they differ from machine to machine).
SKIPPED_DIRS = frozenset({"__pycache__", ".git", ".hg", ".svn", ".mypy_cache", ".pytest_cache", ".ruff_cache"})
SKIPPED_SUFFIXES = (".pyc", ".pyo")
ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest a zip can say: no clock in the bytes


@dataclass(frozen=True)
class CodePackage:
    """A folder's files, zipped: `name` holds the digest of what the files are (their paths, modes and bytes)."""

    name: str
    digest: str
    data: bytes
    files: int


def _files(folder: str) -> list[tuple[str, str]]:
    """(relative path, absolute path) of every file to pack, sorted; refuses what a zip cannot hold faithfully."""
    found = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS)
        for name in names:
            path = os.path.join(root, name)
            if name.endswith(SKIPPED_SUFFIXES):
                continue
            if not os.path.isfile(path):
                raise ConfigError(f"shardscore package: {path} is not a regular file (a socket, a broken link?)")
            found.append((os.path.relpath(path, folder).replace(os.sep, "/"), path))
    return sorted(found)


def build(folder: str) -> CodePackage:
    """The folder's files as a zip with one top folder named like the package (see the module's docstring)."""
    if not os.path.isdir(folder):
        raise ConfigError(f"shardscore package: {folder} is not a folder")
    files = [(rel, path, os.stat(path).st_mode & stat.S_IXUSR != 0) for rel, path in _files(folder)]
    if not files:
        raise ConfigError(f"shardscore package: {folder} holds no file to pack")
    digest = hashlib.sha256()
    contents = []
    for rel, path, executable in files:
        with open(path, "rb") as f:
            body = f.read()
        contents.append(body)
        digest.update(f"{rel}\0{int(executable)}\0{len(body)}\0".encode() + body)
    base = os.path.basename(os.path.abspath(folder)) or "code"
    name = f"{base}-{digest.hexdigest()[:16]}"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for (rel, _, executable), body in zip(files, contents, strict=True):
            info = zipfile.ZipInfo(f"{name}/{rel}", date_time=ZIP_TIME)
            info.external_attr = (0o100755 if executable else 0o100644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, body)
    return CodePackage(f"{name}.zip", digest.hexdigest(), buffer.getvalue(), len(files))


def publish(package: CodePackage, loc: Location) -> tuple[str, bool]:
    """Put the zip into `loc` unless it is there already: (its URI, whether this call uploaded it). Written atomically
    (storage.write_atomic), so a worker never downloads half a zip."""
    path = loc.join(package.name)
    info = loc.fs.get_file_info(path)
    if info.type == pafs.FileType.File and info.size == len(package.data):
        return loc.display(path), False
    write_atomic(loc, path, lambda out: out.write(package.data))
    return loc.display(path), True
