"""Where data lives: local paths and object stores behind one pyarrow filesystem API, plus atomic writes.

Atomicity: on a local filesystem a file is written under a hidden temporary name in the same directory and
renamed into place (rename is atomic). On object stores an object becomes visible only when its upload
completes, so it is written to its final key directly. Either way no reader ever sees half a file.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, Iterator

import pyarrow as pa
import pyarrow.fs as pafs

from .errors import ConfigError

HIDDEN_PREFIXES = ("_", ".")


@dataclass(frozen=True)
class StorageOptions:
    """How to reach object stores. Credentials are never here: they come from the standard AWS variables."""

    s3_endpoint: str | None = None


@dataclass(frozen=True)
class Location:
    """A directory-like location: a filesystem and a path inside it."""

    fs: pafs.FileSystem
    path: str
    uri: str

    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)

    def join(self, *parts: str) -> str:
        return "/".join([self.path.rstrip("/"), *[p.strip("/") for p in parts if p]])

    def display(self, path: str) -> str:
        """The user-facing URI of a path inside this location."""
        rel = path[len(self.path.rstrip("/")):].lstrip("/")
        return self.uri.rstrip("/") + ("/" + rel if rel else "")


def _s3_endpoint(options: StorageOptions) -> str | None:
    return options.s3_endpoint or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")


@lru_cache(maxsize=8)
def _s3_filesystem(endpoint: str | None) -> pafs.S3FileSystem:
    kwargs: dict[str, Any] = {}
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if endpoint:
        scheme, _, host = endpoint.partition("://")
        if not host:
            raise ConfigError(f"--s3-endpoint {endpoint!r}: expected a URL such as http://127.0.0.1:9000")
        kwargs.update(endpoint_override=host, scheme=scheme)
        region = region or "us-east-1"
    if region:
        kwargs["region"] = region
    return pafs.S3FileSystem(**kwargs)


def resolve(uri: str, options: StorageOptions = StorageOptions()) -> Location:
    """Turn a user URI (a local path, file://, s3://, or any scheme pyarrow knows) into a Location."""
    if not uri:
        raise ConfigError("empty location: give a local path or an s3:// URI")
    if uri.startswith("s3://"):
        path = uri[len("s3://"):].rstrip("/")
        if not path:
            raise ConfigError(f"{uri!r}: an s3:// URI needs a bucket")
        return Location(_s3_filesystem(_s3_endpoint(options)), path, uri.rstrip("/"))
    if "://" in uri and not uri.startswith("file://"):
        try:
            fs, path = pafs.FileSystem.from_uri(uri)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as exc:
            raise ConfigError(f"{uri!r}: unsupported location ({exc})") from exc
        return Location(fs, path.rstrip("/"), uri.rstrip("/"))
    local = os.path.abspath(uri[len("file://"):] if uri.startswith("file://") else uri)
    return Location(pafs.LocalFileSystem(), local, local)


def is_hidden(relpath: str) -> bool:
    """Files and folders starting with '_' or '.' are metadata, not data (the convention Parquet readers follow)."""
    return any(part.startswith(HIDDEN_PREFIXES) for part in relpath.split("/"))


def list_files(loc: Location, recursive: bool = True) -> Iterator[tuple[str, pafs.FileInfo]]:
    """Yield (path relative to loc, FileInfo) for every visible file, sorted by path."""
    selector = pafs.FileSelector(loc.path, recursive=recursive, allow_not_found=True)
    base = loc.path.rstrip("/") + "/"
    entries = sorted(
        (i for i in loc.fs.get_file_info(selector) if i.type == pafs.FileType.File), key=lambda i: i.path
    )
    for entry in entries:
        rel = entry.path[len(base):] if entry.path.startswith(base) else entry.path
        if not is_hidden(rel):
            yield rel, entry


def write_atomic(loc: Location, path: str, write: Callable[[pa.NativeFile], None]) -> None:
    """Write a file so that readers see either nothing or all of it."""
    parent = path.rsplit("/", 1)[0]
    if loc.is_local:
        loc.fs.create_dir(parent, recursive=True)
        name = path.rsplit("/", 1)[1]
        tmp = f"{parent}/.tmp-{name}-{uuid.uuid4().hex}"
        try:
            with loc.fs.open_output_stream(tmp) as out:
                write(out)
            loc.fs.move(tmp, path)
        except BaseException:
            _delete_quietly(loc.fs, tmp)
            raise
    else:
        with loc.fs.open_output_stream(path) as out:
            write(out)


def _delete_quietly(fs: pafs.FileSystem, path: str) -> None:
    try:
        fs.delete_file(path)
    except (FileNotFoundError, OSError):
        pass


def write_json(loc: Location, path: str, data: Any) -> None:
    payload = (json.dumps(data, indent=2, sort_keys=True, default=str) + "\n").encode()
    write_atomic(loc, path, lambda out: out.write(payload))


def read_json(loc: Location, path: str) -> Any | None:
    """The parsed JSON at path, or None where there is no such file."""
    try:
        with loc.fs.open_input_stream(path) as f:
            return json.loads(f.read())
    except FileNotFoundError:
        return None


def delete(loc: Location, path: str) -> None:
    _delete_quietly(loc.fs, path)
