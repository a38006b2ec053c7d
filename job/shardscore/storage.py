"""Where data lives: local paths and object stores behind one pyarrow filesystem API, plus atomic writes.

Atomicity (`write_atomic`): a file is written under a hidden temporary name beside its final one and moved into
place, a rename on local disks and a server-side copy on object stores. Not to the final key directly: pyarrow's
S3 stream completes its upload when it is closed, also after a failed write, and would publish half a file. Small
JSON files (`write_json`) are renamed into place on local disks and sent as one PUT of the whole body to object
stores. Either way no reader ever sees half a file.
"""

from __future__ import annotations

import errno
import json
import os
import uuid
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable, Iterator

import pyarrow as pa
import pyarrow.fs as pafs

from .errors import ConfigError
from .markers import MARKER

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
    endpoint: str | None = None  # an S3-compatible endpoint, for the calls pyarrow does not offer

    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)

    def join(self, *parts: str) -> str:
        return "/".join([self.path.rstrip("/"), *[p.strip("/") for p in parts if p]])

    def display(self, path: str) -> str:
        """The user-facing URI of a path inside this location."""
        rel = path[len(self.path.rstrip("/")):].lstrip("/")
        return self.uri.rstrip("/") + ("/" + rel if rel else "")

    @property
    def canonical(self) -> tuple[str, str]:
        """(store, path) that two spellings of one place share: a real absolute path on local disks (symlinks
        resolved), bucket and key prefix on object stores (`s3://b/p`, `s3://b/p/` and `s3://b//p` alike)."""
        if self.is_local:
            return "file", os.path.realpath(self.path)
        return self.fs.type_name, "/".join(part for part in self.path.split("/") if part)

    def contains(self, other: "Location") -> bool:
        """Whether `other` is this location or lies inside it (on the same store).

        On local disks by path (symlinks resolved) and by file identity: one volume mounted at two paths (a bind
        mount, one PVC mounted twice in a pod) gives two unrelated paths to one directory, which only the device
        and inode numbers of the directory and its ancestors tell.
        """
        (store, mine), (their_store, theirs) = self.canonical, other.canonical
        if store != their_store:
            return False
        if theirs == mine or theirs.startswith(mine.rstrip("/") + "/"):
            return True
        own = identity(mine) if self.is_local else None
        return own is not None and own in ancestry(theirs)


def identity(path: str) -> tuple[int, int] | None:
    """(st_dev, st_ino) of an existing path (links followed), None where there is nothing."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def ancestry(path: str) -> list[tuple[int, int]]:
    """The identity of a local path and of each of its ancestors up to `/`; a path that does not exist yet (an
    output before its first run) starts at its nearest existing ancestor."""
    current = os.path.realpath(path)
    found: list[tuple[int, int]] = []
    while True:
        ident = identity(current)
        if ident is not None:
            found.append(ident)
        parent = os.path.dirname(current)
        if parent == current:
            return found
        current = parent


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
        endpoint = _s3_endpoint(options)
        return Location(_s3_filesystem(endpoint), path, uri.rstrip("/"), endpoint)
    if "://" in uri and not uri.startswith("file://"):
        try:
            fs, path = pafs.FileSystem.from_uri(uri)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as exc:
            raise ConfigError(f"{uri!r}: unsupported location ({exc})") from exc
        return Location(fs, path.rstrip("/"), uri.rstrip("/"))
    local = os.path.abspath(uri[len("file://"):] if uri.startswith("file://") else uri)
    return Location(pafs.LocalFileSystem(), local, local)


def require_credentials(loc: Location, what: str) -> None:
    """Refuse an s3:// location when no AWS credentials can be found, naming what to set. Without them each store
    fails its own way (pyarrow: "Unable to locate credentials" at the first write; delta-rs: an instance-metadata
    error), some only once workers run. The chain is botocore's (botocore.credentials.create_credential_resolver:
    variables, profile, web identity, container and instance roles), which pyarrow's AWS SDK and delta-rs's
    object_store follow too."""
    if loc.uri.startswith("s3://") and not _aws_credentials_found():
        raise ConfigError(f"{what}: no AWS credentials found for {loc.uri}: set AWS_ACCESS_KEY_ID and "
                          "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, or a web identity (AWS_ROLE_ARN and "
                          "AWS_WEB_IDENTITY_TOKEN_FILE, as EKS's IRSA sets them); on Kubernetes the chart's "
                          "objectStore.credentialsSecret.name gives them to the Ray pods")


@lru_cache(maxsize=1)
def _aws_credentials_found() -> bool:
    import boto3

    return boto3.session.Session().get_credentials() is not None


def is_hidden(relpath: str) -> bool:
    """Files and folders starting with '_' or '.' are metadata, not data (the convention Parquet readers follow)."""
    return any(part.startswith(HIDDEN_PREFIXES) for part in relpath.split("/"))


def is_commit_marker(relpath: str) -> bool:
    """A Databricks commit marker (markers.py) in a visible folder: hidden, but it says which visible files count."""
    folder, _, name = relpath.rpartition("/")
    return MARKER.fullmatch(name) is not None and not (folder and is_hidden(folder))


@dataclass
class Listing:
    """The visible files below a location, the commit markers among its hidden ones, and the symbolic links that
    were not followed because they loop."""

    files: list[tuple[str, pafs.FileInfo]]  # (path relative to the location, FileInfo), sorted by path
    loops: list[str]  # "relpath -> target" of each looping link
    markers: list[tuple[str, pafs.FileInfo]] = field(default_factory=list)  # Databricks commit markers


def scan(loc: Location, recursive: bool = True) -> Listing:
    """List every visible file below loc, and the commit markers among the hidden ones (one listing call on object
    stores).

    On local disks the walk follows symbolic links to files and folders, like a reader would, but never a link
    to a folder it is already inside (`loop -> ..`): pyarrow's recursive selector follows such links until the
    path is too long, counting one file hundreds of times.
    """
    if loc.is_local:
        return _scan_local(loc.path, recursive)
    selector = pafs.FileSelector(loc.path, recursive=recursive, allow_not_found=True)
    base = loc.path.rstrip("/") + "/"
    files, markers = [], []
    for entry in loc.fs.get_file_info(selector):
        rel = entry.path[len(base):] if entry.path.startswith(base) else entry.path
        if entry.type == pafs.FileType.File:
            if not is_hidden(rel):
                files.append((rel, entry))
            elif is_commit_marker(rel):
                markers.append((rel, entry))
    return Listing(sorted(files, key=lambda item: item[0]), [], sorted(markers, key=lambda item: item[0]))


def _scan_local(root: str, recursive: bool) -> Listing:
    files: list[tuple[str, pafs.FileInfo]] = []
    markers: list[tuple[str, pafs.FileInfo]] = []
    loops: list[str] = []

    def walk(path: str, rel: str, ancestors: frozenset[tuple[int, int]]) -> None:
        try:
            entries = sorted(os.scandir(path), key=lambda e: e.name)
        except FileNotFoundError:
            return
        for entry in entries:
            child_rel = f"{rel}/{entry.name}" if rel else entry.name
            if entry.name.startswith(HIDDEN_PREFIXES):
                if MARKER.fullmatch(entry.name) and entry.is_file():
                    markers.append((child_rel, _file_info(entry.path, entry.stat())))
                continue
            try:
                st = entry.stat()  # follows links
            except OSError:
                continue  # a dangling link
            if entry.is_dir():
                if not recursive:
                    continue
                key = (st.st_dev, st.st_ino)
                if key in ancestors:
                    loops.append(f"{child_rel} -> {os.readlink(entry.path) if entry.is_symlink() else entry.path}")
                    continue
                walk(entry.path, child_rel, ancestors | {key})
            elif entry.is_file():
                files.append((child_rel, _file_info(entry.path, st)))

    try:
        top = os.stat(root)
    except FileNotFoundError:
        return Listing([], [])
    walk(root, "", frozenset({(top.st_dev, top.st_ino)}))
    return Listing(sorted(files, key=lambda item: item[0]), loops, sorted(markers, key=lambda item: item[0]))


def _file_info(path: str, st: os.stat_result) -> pafs.FileInfo:
    return pafs.FileInfo(path, pafs.FileType.File, mtime_ns=st.st_mtime_ns, size=st.st_size)


def list_files(loc: Location, recursive: bool = True) -> Iterator[tuple[str, pafs.FileInfo]]:
    """Yield (path relative to loc, FileInfo) for every visible file, sorted by path."""
    yield from scan(loc, recursive).files


def stamp(info: pafs.FileInfo) -> tuple[int, int]:
    """What a listing tells of a file for free: (size, mtime in ns). Any rewrite changes the mtime."""
    return int(info.size or 0), int(info.mtime_ns or 0)


TEMP_PREFIX = ".tmp-"


def temp_name(name: str, generation: int = 0) -> str:
    """A hidden temporary name beside `name`, carrying the writer's lease generation (0: none), so that a run's
    clean-up can tell its own and older runs' leftovers from a newer run's files in flight."""
    tag = f"g{generation:08d}-" if generation else ""
    return f"{TEMP_PREFIX}{tag}{name}-{uuid.uuid4().hex}"


def temp_generation(base_name: str) -> int | None:
    """The lease generation of a temporary file's writer (0 for an untagged one), None when it is no temporary."""
    if not base_name.startswith(TEMP_PREFIX):
        return None
    tag = base_name[len(TEMP_PREFIX):].split("-", 1)[0]
    return int(tag[1:]) if len(tag) == 9 and tag[0] == "g" and tag[1:].isdigit() else 0


def write_atomic(loc: Location, path: str, write: Callable[[pa.NativeFile], None],
                 before_publish: Callable[[], None] | None = None, generation: int = 0) -> None:
    """Write a file so that readers see either nothing or all of it.

    The file is written under a hidden temporary name beside its final one, then moved into place: a rename on
    local disks, a server-side copy on object stores. Writing to the final key directly is not enough there:
    pyarrow's S3 output stream completes the upload when it is closed, also when the writer failed half way
    (its `__exit__` closes it, and it has no abort), which would publish half a file. `before_publish` runs just
    before the file appears under its final name. `generation` (the writer's lease generation) tags the temporary.
    """
    parent, name = path.rsplit("/", 1)
    tmp = f"{parent}/{temp_name(name, generation)}"
    if loc.is_local:
        loc.fs.create_dir(parent, recursive=True)
    try:
        with loc.fs.open_output_stream(tmp) as out:
            write(out)
        if before_publish is not None:
            before_publish()
        loc.fs.move(tmp, path)
    except BaseException:
        _delete_quietly(loc.fs, tmp)
        raise


def _delete_quietly(fs: pafs.FileSystem, path: str) -> None:
    try:
        fs.delete_file(path)
    except (FileNotFoundError, OSError):
        pass


def _json_bytes(data: Any) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=True, default=str) + "\n").encode()


def write_json(loc: Location, path: str, data: Any, generation: int = 0) -> None:
    """A small JSON file, atomically: renamed into place on local disks, one PUT of the whole body on object stores
    (an upload of one buffer either completes or is not there)."""
    payload = _json_bytes(data)
    if loc.is_local:
        write_atomic(loc, path, lambda out: out.write(payload), generation=generation)
    else:
        with loc.fs.open_output_stream(path) as out:
            out.write(payload)


def create_json(loc: Location, path: str, data: Any, generation: int = 0) -> bool:
    """Create the file only where none exists; True when this call created it (False: it was there already).

    Atomic where the store offers it: a hard link of a complete temporary file on local disks (the link fails when
    the name exists), S3's conditional write (`If-None-Match: *`) on s3:// locations. Other stores get
    check-then-write, which two writers racing within the same moment can both pass.
    """
    payload = _json_bytes(data)
    if loc.is_local:
        return _create_local(path, payload, generation)
    if loc.uri.startswith("s3://"):
        return _create_s3(loc, path, payload)
    if loc.fs.get_file_info(path).type != pafs.FileType.NotFound:
        return False
    write_atomic(loc, path, lambda out: out.write(payload), generation=generation)
    return True


def _create_local(path: str, payload: bytes, generation: int) -> bool:
    parent, name = path.rsplit("/", 1)
    os.makedirs(parent, exist_ok=True)
    tmp = f"{parent}/{temp_name(name, generation)}"
    with open(tmp, "wb") as f:
        f.write(payload)
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
            raise
        return _create_exclusive(path, payload)  # a file system without hard links (some FUSE mounts)
    finally:
        os.unlink(tmp)


def _create_exclusive(path: str, payload: bytes) -> bool:
    """O_EXCL creation: as atomic, but a reader can see the file before its bytes (lease.py reads again)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as f:
        f.write(payload)
    return True


def _s3_client(loc: Location):
    import boto3  # only outputs on S3 need it

    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    return boto3.client("s3", endpoint_url=loc.endpoint, region_name=region)


def _put_s3(loc: Location, path: str, payload: bytes, **condition: str) -> str | None:
    """One conditional PUT (`IfNoneMatch="*"` or `IfMatch=<etag>`): the new object's ETag, or None when the
    condition failed. 412: the condition does not hold; 409 (ConditionalRequestConflict): another conditional
    write to the key is under way; 404 (NoSuchKey): an If-Match on an object deleted since."""
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, _, key = path.partition("/")
    try:
        return _s3_client(loc).put_object(Bucket=bucket, Key=key, Body=payload, **condition)["ETag"]
    except ClientError as exc:
        if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") in (404, 409, 412):
            return None
        raise OSError(f"{loc.display(path)}: {exc}") from exc
    except BotoCoreError as exc:  # no credentials, no connection: the same failure pyarrow would report
        raise OSError(f"{loc.display(path)}: {exc}") from exc


def _create_s3(loc: Location, path: str, payload: bytes) -> bool:
    return _put_s3(loc, path, payload, IfNoneMatch="*") is not None


class SharedJson:
    """A small JSON file that one writer at a time rewrites, and that a later writer takes over (the progress file:
    each run's driver in turn).

    On s3:// every write is conditional on the ETag of what this writer last saw (`If-Match`; `If-None-Match: *`
    where there was nothing), so once another writer has written the file this one's writes fail, also a write
    that was past its caller's check when its process was paused (SIGSTOP, a frozen node) and resumed after the
    other took over. Elsewhere: write_json, whose atomic rename is unconditional (the window stays).
    """

    def __init__(self, loc: Location, path: str, generation: int = 0):
        self.loc, self.path, self.generation = loc, path, generation
        self.conditional = loc.uri.startswith("s3://")
        self._etag: str | None = None
        self._known = False  # whether _etag is what the file was after this writer's last read or write

    def write(self, data: Any, check: Callable[[], None] = lambda: None) -> bool:
        """Replace the file with `data`; False, and nothing written, when another writer wrote it since this one
        last saw it. `check` (e.g. lease.check_fence) runs after the file's ETag was read and before the write: a
        writer paused anywhere after it and resumed after another writer's write writes nothing."""
        if not self.conditional:
            check()
            write_json(self.loc, self.path, data, self.generation)
            return True
        if not self._known:
            self._etag, self._known = self._head(), True
        check()
        condition = {"IfMatch": self._etag} if self._etag else {"IfNoneMatch": "*"}
        try:
            etag = _put_s3(self.loc, self.path, _json_bytes(data), **condition)
        except OSError:
            self._known = False  # the PUT may have landed all the same: read the ETag again before the next
            raise
        self._etag, self._known = etag, etag is not None
        return etag is not None

    def _head(self) -> str | None:
        from botocore.exceptions import BotoCoreError, ClientError

        bucket, _, key = self.path.partition("/")
        try:
            return _s3_client(self.loc).head_object(Bucket=bucket, Key=key)["ETag"]
        except ClientError as exc:
            if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                return None
            raise OSError(f"{self.loc.display(self.path)}: {exc}") from exc
        except BotoCoreError as exc:
            raise OSError(f"{self.loc.display(self.path)}: {exc}") from exc


def read_json(loc: Location, path: str) -> Any | None:
    """The parsed JSON at path, or None where there is no such file."""
    try:
        with loc.fs.open_input_stream(path) as f:
            return json.loads(f.read())
    except FileNotFoundError:
        return None


def delete(loc: Location, path: str) -> None:
    _delete_quietly(loc.fs, path)
