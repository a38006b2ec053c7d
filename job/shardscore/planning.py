"""Shard planning: which files make the dataset, how they split into shards, what each shard holds.

Knows nothing of Ray. A shard is one Parquet file, or a run of its row groups when the file has more rows than
`max_rows_per_shard` and more than one row group. Shard ids derive from the file's relative path and row-group
range only, so the same input always gives the same shard ids (which is what makes resume and retries safe).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import struct
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, TypeVar

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from . import markers
from .errors import InputError
from .storage import Listing, Location, scan

PARQUET_SUFFIXES = (".parquet", ".parq", ".pq")
MAGIC = b"PAR1"
ENCRYPTED_MAGIC = b"PARE"  # a Parquet file whose footer is encrypted
FOOTER_PROBE_BYTES = 64 * 1024
#: The unit INT96 timestamps (Spark's and Impala's legacy encoding) are read in, by planning and by the workers
#: alike (ParquetFile's `coerce_int96_timestamp_unit`). pyarrow's default, ns, overflows outside 1677-2262 into
#: wrong dates (9999-12-31, the usual "no end", reads as 1816-03-29); us spans every year 1-9999 and is Spark's own.
INT96_UNIT = "us"
MAX_LISTED = 100  # ignored files named in the manifest and the plan (all of them are counted)
T = TypeVar("T")
R = TypeVar("R")


def has_parquet_suffix(relpath: str) -> bool:
    """Named as Parquet (`a.parquet`, `a.PARQUET`, `a.pq`): such a file that is not Parquet is a failed shard."""
    return relpath.lower().endswith(PARQUET_SUFFIXES)


#: Where the rows a model failed on go, under the output: a folder readers of the predictions skip.
REJECTED_DIR = "_rejected"


@dataclass(frozen=True)
class Shard:
    """One unit of work: a file (or some of its row groups) that one worker scores into one output file."""

    shard_id: str
    path: str  # path inside the input filesystem
    relpath: str
    row_groups: tuple[int, ...] | None  # None: the whole file
    num_rows: int
    num_bytes: int
    fingerprint: str  # of the input file: changes whenever its content does

    @property
    def output_relpath(self) -> str:
        stem = self.relpath.rsplit(".", 1)[0] if has_parquet_suffix(self.relpath) else self.relpath
        if self.row_groups is not None:
            stem += f".rg{self.row_groups[0]}-{self.row_groups[-1]}"
        return stem + ".parquet"

    @property
    def rejected_relpath(self) -> str:
        """Its quarantine file (quarantine.py): under REJECTED_DIR, which the readers of a folder skip ('_'), and
        named `.pq`, not `.parquet`: the glob `<output>/**/*.parquet` (DuckDB's and polars' way, README) descends
        into `_` folders too, and would take the rejected rows for predictions."""
        return f"{REJECTED_DIR}/{self.output_relpath.removesuffix('.parquet')}.pq"


@dataclass(frozen=True)
class BadFile:
    """A file that could not even be planned (not Parquet, truncated footer): it fails as a shard of its own."""

    shard_id: str
    path: str
    relpath: str
    reason: str


@dataclass(frozen=True)
class IgnoredFile:
    """A visible file that is not scored, and why: not Parquet (no PAR1 magic and no Parquet name), or an
    uncommitted Databricks task attempt's file."""

    relpath: str
    reason: str


def listed(ignored: list[IgnoredFile]) -> dict[str, Any]:
    """The bounded form the manifest and `plan --json` give: the count, and the first MAX_LISTED with why."""
    return {"count": len(ignored), "first": [{"path": i.relpath, "reason": i.reason} for i in ignored[:MAX_LISTED]]}


def ignored_text(ignored: dict[str, Any], shown: int = 5) -> str:
    """One line for people about a `listed` form: how many files were ignored, the first few and why."""
    first = ignored["first"][:shown]
    more = ignored["count"] - len(first)
    return (f"ignored {ignored['count']} input file(s), not scored: "
            + "; ".join(f"{i['path']} ({i['reason']})" for i in first)
            + (f"; and {more} more (ignored_files in the manifest and in plan --json names the first {MAX_LISTED})"
               if more else ""))


@dataclass
class Plan:
    shards: list[Shard]
    bad_files: list[BadFile]
    schema: pa.Schema | None  # the most common file schema, with the columns read widened to fit every file
    schema_mismatches: dict[str, str] = field(default_factory=dict)  # shard_id -> what differs
    ignored: list[IgnoredFile] = field(default_factory=list)  # visible files that are not scored, sorted by path
    casts: dict[str, pa.DataType] = field(default_factory=dict)  # columns read whose width differs between files
    loops: list[str] = field(default_factory=list)  # symbolic links not followed because they loop

    @property
    def total_rows(self) -> int:
        return sum(s.num_rows for s in self.shards)

    @property
    def total_bytes(self) -> int:
        return sum(s.num_bytes for s in self.shards)


@dataclass(frozen=True)
class Footer:
    metadata: pq.FileMetaData
    fingerprint: str
    size: int
    version: bytes  # the ETag on object stores, the mtime on local disks (see `file_version`)


def file_version(loc: Location, f: pa.NativeFile, mtime_ns: Callable[[], int | None]) -> bytes:
    """What the store tells for free of an open file's version: the ETag on object stores (pyarrow's S3 input file
    reports it from the HEAD request it makes when opened: ObjectInputFile::Init in arrow's s3fs.cc), else the
    modification time, asked of `mtime_ns` only then."""
    etag = (f.metadata() or {}).get("ETag", b"") if not loc.is_local else b""
    if etag:
        return etag
    mtime = mtime_ns()
    return str(mtime if mtime is not None else "").encode()


class NotParquet(ValueError):
    """Neither end of the file holds the PAR1 magic: not Parquet at all, as opposed to a damaged Parquet file."""


def read_footer(loc: Location, path: str, mtime_ns: int | None = None) -> Footer:
    """Open a file, read its footer and fingerprint it (`footer_of`); `mtime_ns` is what the listing said."""
    with loc.fs.open_input_file(path) as f:
        return footer_of(loc, f, lambda: mtime_ns)


def footer_of(loc: Location, f: pa.NativeFile, mtime_ns: Callable[[], int | None]) -> Footer:
    """Read only the Parquet footer of an open file and fingerprint the file: one ranged read of its last
    FOOTER_PROBE_BYTES on object stores, a second one for a larger footer.

    The fingerprint covers the size, the footer (every row group's offsets, sizes and statistics) and the file's
    version (`file_version`). So an edit that keeps the size and the footer's bytes, such as two values swapped,
    is still seen. Planning and the worker that scores a shard both fingerprint through here, so that the worker
    can tell the file it opened from the one that was planned.
    """
    size = f.size()
    version = file_version(loc, f, mtime_ns)
    probe = min(size, FOOTER_PROBE_BYTES)
    f.seek(size - probe)
    tail = f.read(probe)
    _check_magic(f, size, tail, loc.is_local)
    footer_len = struct.unpack("<I", tail[-8:-4])[0]
    if footer_len + 12 > size:
        raise ValueError(f"corrupt Parquet footer: length {footer_len} exceeds the file size {size}")
    if footer_len + 8 > len(tail):
        f.seek(size - footer_len - 8)
        tail = f.read(footer_len + 8)
    footer = tail[-(footer_len + 8):]
    try:
        metadata = pq.read_metadata(pa.BufferReader(MAGIC + footer))
    except (OSError, pa.ArrowException) as exc:
        raise ValueError(f"corrupt Parquet footer: {exc}") from exc
    digest = hashlib.sha256(struct.pack("<Q", size) + footer + b"\0" + version).hexdigest()[:20]
    return Footer(metadata, digest, size, version)


def file_stamp(loc: Location, path: str) -> tuple[int, bytes]:
    """A file's size and version as they are now, without reading it (a stat, or one HEAD request)."""
    with loc.fs.open_input_file(path) as f:
        return f.size(), file_version(loc, f, lambda: loc.fs.get_file_info(path).mtime_ns)


def _arrow_schema(loc: Location, path: str) -> pa.Schema:
    """A file's schema as the workers read it (INT96 in INT96_UNIT), from its footer."""
    with loc.fs.open_input_file(path) as f:
        return pq.ParquetFile(f, coerce_int96_timestamp_unit=INT96_UNIT).schema_arrow


def _check_magic(f: pa.NativeFile, size: int, tail: bytes, local: bool) -> None:
    """Parquet starts and ends with PAR1. The end is in the tail read anyway; the start is checked where it costs
    no request of its own: in the tail already (files up to FOOTER_PROBE_BYTES), on local disks, and for a file
    without the end magic (to tell a truncated Parquet file from no Parquet at all). A large object on an object
    store with a valid end is not probed at its start: a second request per file, for a check pyarrow's reader
    does not make either (a file whose first four bytes are overwritten reads the same with pq.read_table)."""
    tail_ok = size >= 12 and tail[-4:] == MAGIC
    head: bool | None = None
    if size <= len(tail):
        head = tail[:4] == MAGIC
    elif local or not tail_ok:
        head = f.read_at(4, 0) == MAGIC
    if tail_ok and head is False:
        raise ValueError("corrupt Parquet file: PAR1 magic at its end but not at its start")
    if tail_ok:
        return
    if size >= 4 and tail[-4:] == ENCRYPTED_MAGIC:
        raise ValueError("a Parquet file with an encrypted footer (PARE magic): not supported, decrypt it first")
    if head:
        raise ValueError(f"not a Parquet file: PAR1 magic at its start but not at its end ({size} bytes: corrupt "
                         "or truncated)")
    raise NotParquet(f"not a Parquet file: no PAR1 magic at its start or end ({size} bytes)")


@dataclass(frozen=True)
class _FileSummary:
    """What planning keeps of a footer: a few numbers per row group (a whole footer is tens of kilobytes)."""

    size: int
    fingerprint: str
    num_rows: int
    row_groups: tuple[tuple[int, int], ...]  # (rows, bytes) per row group
    schema_key: str


def _summarize(loc: Location, relpath: str, path: str, mtime_ns: int | None) -> _FileSummary | IgnoredFile | str:
    """A file's summary, why it is ignored (no PAR1 magic, and no Parquet name that says it should have one), or
    why it cannot be planned (a failed shard).

    The schema is keyed by its columns' names and types, read straight from the footer, and the Arrow types
    stored beside them (_arrow_types): converting each footer's whole schema to Arrow in the planning threads costs
    tens of kilobytes per file that are never given back, while decoding the stored Arrow types did not raise the
    resident memory of 16 threads summarizing 3000 pandas files (measured: 13 MiB with it, 17 without; noise).
    """
    try:
        footer = read_footer(loc, path, mtime_ns)
    except NotParquet as exc:
        return str(exc) if has_parquet_suffix(relpath) else IgnoredFile(relpath, str(exc))
    except (ValueError, OSError) as exc:
        return str(exc)
    md = footer.metadata
    # The schema's text without its first line, which holds the object's address (pyarrow/_parquet.pyx,
    # ParquetSchema.__repr__).
    key = _schema_key(str(md.schema).partition("\n")[2], (md.metadata or {}).get(b"ARROW:schema", b""))
    groups = tuple((md.row_group(i).num_rows, md.row_group(i).total_byte_size) for i in range(md.num_row_groups))
    return _FileSummary(footer.size, footer.fingerprint, md.num_rows, groups, key)


@functools.lru_cache(maxsize=32)
def _schema_key(parquet_schema: str, stored: bytes) -> str:
    """The key of a file's schema: the Parquet schema's text (every column's path, repetition, physical and logical
    type) and the Arrow types a writer stored beside it (`_arrow_types`). Cached, as a dataset's files mostly share
    one schema: worked out for each of 10,000 tiny files, it was a third of their planning."""
    return hashlib.sha256(repr((parquet_schema, _arrow_types(stored))).encode()).hexdigest()[:16]


def _arrow_types(stored: bytes) -> list[tuple[str, str]]:
    """The Arrow types a writer stored beside the Parquet ones (`ARROW:schema`), which pyarrow's reader restores:
    one Parquet string column reads as `large_string` from a pandas or polars file and as `string` from DuckDB's,
    so files that differ only there are two schemas to reconcile. Types only: the stored schema also carries
    pandas' metadata, which differs from file to file."""
    if not stored:
        return []
    try:
        schema = pa.ipc.read_schema(pa.py_buffer(base64.b64decode(stored)))
    except (ValueError, pa.ArrowException):
        return [("ARROW:schema", "unreadable")]
    return [(f.name, str(f.type)) for f in schema]


def _split(relpath: str, path: str, summary: _FileSummary, max_rows: int | None) -> list[Shard]:
    whole = Shard(relpath, path, relpath, None, summary.num_rows, summary.size, summary.fingerprint)
    if not max_rows or summary.num_rows <= max_rows or len(summary.row_groups) <= 1:
        return [whole]
    shards: list[Shard] = []
    group: list[int] = []
    rows = nbytes = 0

    def close() -> None:
        rg = tuple(group)
        shard_id = f"{relpath}#rg{rg[0]}-{rg[-1]}"
        shards.append(Shard(shard_id, path, relpath, rg, rows, nbytes, summary.fingerprint))

    for i, (rg_rows, rg_bytes) in enumerate(summary.row_groups):
        if group and rows + rg_rows > max_rows:
            close()
            group, rows, nbytes = [], 0, 0
        group.append(i)
        rows += rg_rows
        nbytes += rg_bytes
    close()
    return shards


_UNITS = ("s", "ms", "us", "ns")


def widen(a: pa.DataType, b: pa.DataType) -> pa.DataType | None:
    """The type both a and b convert to without loss (int8 and int64 -> int64), or None when there is none.

    A null-typed column (pandas writes an empty or all-None object column so) fits any type. Timestamps widen to
    the finer unit (DuckDB and Spark write microseconds, pandas nanoseconds), which holds every value the coarser
    one does within its range: widen_table checks each value. Timezones are never merged.
    """
    if a.equals(b) or pa.types.is_null(b):
        return a
    if pa.types.is_null(a):
        return b
    if pa.types.is_integer(a) and pa.types.is_integer(b):
        signed_a, signed_b = pa.types.is_signed_integer(a), pa.types.is_signed_integer(b)
        if signed_a == signed_b:
            return a if a.bit_width >= b.bit_width else b
        unsigned_width = a.bit_width if not signed_a else b.bit_width
        width = max(a.bit_width, b.bit_width, unsigned_width * 2)
        return {16: pa.int16(), 32: pa.int32(), 64: pa.int64()}.get(width)
    if pa.types.is_floating(a) and pa.types.is_floating(b):
        return a if a.bit_width >= b.bit_width else b
    if pa.types.is_timestamp(a) and pa.types.is_timestamp(b) and a.tz == b.tz:
        return a if _UNITS.index(a.unit) >= _UNITS.index(b.unit) else b
    for small, large in ((pa.string(), pa.large_string()), (pa.binary(), pa.large_binary())):
        if {str(a), str(b)} == {str(small), str(large)}:
            return large
    return None


def widen_table(table: pa.Table, casts: dict[str, pa.DataType], first_row: int) -> pa.Table:
    """The table with the plan's wider types, where they differ. The cast is pyarrow's safe one (the default of
    pyarrow.compute.cast: CastOptions.safe), which refuses a value the wider type cannot hold: a timestamp of
    9999-12-31 in microseconds has no nanosecond form. Raises ValueError naming the column, the value and its row."""
    for name, target in casts.items():
        idx = table.schema.get_field_index(name)
        if idx < 0 or table.schema.field(idx).type.equals(target):
            continue
        column = table.column(idx)
        try:
            table = table.set_column(idx, name, column.cast(target))
        except pa.ArrowInvalid as exc:
            row, value = _first_unfit(column, target)
            raise ValueError(f"column {name!r}: the value {value} (row {first_row + row}) does not fit {target}, the "
                             f"type other files of the input give this column ({exc}). Write every file with one "
                             "type for it (for timestamps: one unit, such as microseconds)") from exc
    return table


def _first_unfit(column: pa.ChunkedArray, target: pa.DataType) -> tuple[int, object]:
    """The first row of `column` whose value `target` cannot hold, and that value."""
    offset = 0
    for chunk in column.chunks:
        for i in range(len(chunk)):
            try:
                pc.cast(chunk.slice(i, 1), target)
            except pa.ArrowInvalid:
                return offset + i, chunk[i].as_py()
        offset += len(chunk)
    return 0, "?"


def _unify(schemas: list[pa.Schema], columns: list[str]) -> tuple[dict[str, pa.DataType], list[dict[str, str]]]:
    """The type of each column read, widened to fit every schema (most common first), and per schema what
    does not fit (a missing column, or a type that no lossless widening reconciles)."""
    types: dict[str, pa.DataType] = {}
    for name in columns:
        idx = schemas[0].get_field_index(name)
        if idx >= 0:
            types[name] = schemas[0].field(idx).type
    problems: list[dict[str, str]] = []
    for schema in schemas:
        found: dict[str, str] = {}
        for name, expected in list(types.items()):
            idx = schema.get_field_index(name)
            if idx < 0:
                found[name] = f"column {name!r} is missing"
                continue
            actual = schema.field(idx).type
            wider = widen(expected, actual)
            if wider is None:
                found[name] = f"column {name!r} has type {actual}, expected {expected}"
            else:
                types[name] = wider
        problems.append(found)
    return types, problems


def plan(loc: Location, max_rows_per_shard: int | None = None, columns: list[str] | None = None,
         threads: int = 16, only: frozenset[str] | None = None) -> Plan:
    """List the dataset, read every visible file's footer (one small read per file, in threads on object stores)
    and cut it into shards.

    Whether a file is Parquet is told by its content, not its name: Hive (`000000_0`) and Athena write Parquet
    without a suffix. A file that is neither named nor shaped as Parquet is ignored and listed, as are the files
    of Databricks task attempts that their job never committed (markers.py). `only`: the files that make the input
    (a table snapshot's data files, relative to `loc`); the others under `loc` are the table's and not listed as
    ignored, and one of them missing is an input error.
    """
    loc, listing = _list(loc)
    if only is not None:
        listing = _only(loc, listing, only)
    ignored = _uncommitted(loc, listing, threads)
    dropped = {i.relpath for i in ignored}
    entries = [(rel, info.path, info.mtime_ns) for rel, info in listing.files if rel not in dropped]
    summaries = _map(loc, lambda entry: _summarize(loc, *entry), entries, threads)
    ignored = sorted([*ignored, *(s for s in summaries if isinstance(s, IgnoredFile))], key=lambda i: i.relpath)
    bad = [BadFile(rel, path, rel, s) for (rel, path, _), s in zip(entries, summaries, strict=True)
           if isinstance(s, str)]
    good = [((rel, path), s) for (rel, path, _), s in zip(entries, summaries, strict=True)
            if isinstance(s, _FileSummary)]
    if not good and not bad:
        raise InputError(f"input {loc.uri}: no Parquet files found" + (
            f"; ignored {len(ignored)} files: " + "; ".join(f"{i.relpath} ({i.reason})" for i in ignored[:5])
            if ignored else ""))
    schema, casts, problems = _reference(loc, good, columns)
    shards: list[Shard] = []
    mismatches: dict[str, str] = {}
    for (rel, path), summary in good:
        file_shards = _split(rel, path, summary, max_rows_per_shard)
        if summary.num_rows and summary.schema_key in problems:  # a zero-row file has nothing to mismatch
            mismatches.update({s.shard_id: problems[summary.schema_key] for s in file_shards})
        shards.extend(file_shards)
    _refuse_output_collisions(shards)
    return Plan(shards, bad, schema, mismatches, ignored, casts, listing.loops)


def _list(loc: Location) -> tuple[Location, Listing]:
    """The files to plan: those below a folder, or the one file the input names (then its folder is the root)."""
    try:
        root = loc.fs.get_file_info(loc.path)
    except OSError as exc:
        raise InputError(f"input {loc.uri}: cannot be read ({exc})") from exc
    if root.type == pafs.FileType.NotFound:
        raise InputError(f"input {loc.uri}: no such file or directory")
    if root.type != pafs.FileType.File:
        return loc, scan(loc)
    parent, name = loc.path.rsplit("/", 1)
    return Location(loc.fs, parent, loc.uri.rsplit("/", 1)[0], loc.endpoint), Listing([(name, root)], [])


def _only(loc: Location, listing: Listing, only: frozenset[str]) -> Listing:
    missing = sorted(only - {rel for rel, _ in listing.files})
    if missing:
        raise InputError(f"input {loc.uri}: {len(missing)} data file(s) of the table are missing, as {missing[0]}: "
                         "removed by the table's maintenance since its snapshot was read?")
    return Listing([(rel, info) for rel, info in listing.files if rel in only], listing.loops)


def _map(loc: Location, fn: Callable[[T], R], items: list[T], threads: int) -> list[R]:
    """fn over items: in threads on object stores, to hide each request's latency; in this thread on local disks,
    which have no latency to hide (and footers parsed in threads cost memory the process never returns)."""
    if loc.is_local or len(items) <= 1:
        return [fn(item) for item in items]
    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(items)))) as pool:
        return list(pool.map(fn, items))


def _uncommitted(loc: Location, listing: Listing, threads: int) -> list[IgnoredFile]:
    """The files of Databricks task attempts that no `_committed_<tid>` marker made valid (markers.py)."""
    if not listing.markers:
        return []

    def parse(entry: tuple[str, pafs.FileInfo]) -> markers.Commit:
        rel, info = entry
        try:
            with loc.fs.open_input_stream(info.path) as f:
                data = f.read()
        except OSError as exc:
            raise InputError(f"input: the Databricks commit marker {loc.display(info.path)} cannot be read "
                             f"({exc})") from exc
        return markers.parse(rel, loc.display(info.path), data)

    commits = _map(loc, parse, [m for m in listing.markers if markers.is_committed_marker(m[0])], threads)
    found = markers.uncommitted([rel for rel, _ in listing.files], [rel for rel, _ in listing.markers], commits)
    return [IgnoredFile(rel, why) for rel, why in found.items()]


def _reference(loc: Location, good: list[tuple[tuple[str, str], _FileSummary]], columns: list[str] | None
               ) -> tuple[pa.Schema | None, dict[str, pa.DataType], dict[str, str]]:
    """The reference schema, the columns read that must be widened to it, and per schema key what does not fit.

    The reference is the most common schema of the files with rows, so one odd file cannot make every other file
    look wrong, and a zero-row file (pandas writes its empty text columns as Arrow's null type) never decides a
    type; the columns read are widened where files differ only in width (int8 in most, int64 in some).
    """
    with_rows = [s for _, s in good if s.num_rows] or [s for _, s in good]
    counts = Counter(s.schema_key for s in with_rows)
    examples = {s.schema_key: path for (_, path), s in reversed(good)}
    keys = [key for key, _ in counts.most_common()]
    schemas = [_arrow_schema(loc, examples[key]) for key in keys]
    if not schemas:
        return None, {}, {}
    read = columns if columns is not None else schemas[0].names
    types, found = _unify(schemas, read)
    problems = {key: "; ".join(p.values()) for key, p in zip(keys, found, strict=True) if p}
    schema = pa.schema([pa.field(f.name, types.get(f.name, f.type), f.nullable) for f in schemas[0]])
    casts = {name: t for name, t in types.items()
             if any(s.get_field_index(name) >= 0 and not s.field(name).type.equals(t) for s in schemas)}
    return schema, casts, problems


def partition_keys(relpaths: Iterable[str]) -> dict[str, str]:
    """The Hive partition keys of the input's folders (`date=2026-12-03/part-0.parquet` gives `date`), each with a
    folder that names it. The output keeps the input's subfolders, so these are the output's partition keys too."""
    keys: dict[str, str] = {}
    for rel in relpaths:
        for folder in rel.split("/")[:-1]:
            key, eq, _ = folder.partition("=")
            if eq and key:
                keys.setdefault(key, folder)
    return keys


def partition_clashes(columns: Iterable[str], keys: dict[str, str]) -> list[tuple[str, str]]:
    """(column, folder) for each output column named like a partition key of the output's folders.

    Readers of such an output break or lie: pyarrow's hive partitioning (pyarrow.dataset, pq.read_table) and
    pandas.read_parquet refuse it ("Unable to merge: Field ... has incompatible types") when the types differ, and
    DuckDB's read_parquet, which enables hive partitioning by default, returns the folder's value in place of the
    column's. DuckDB matches names regardless of case (`Date=...` replaces `date`), so names are compared so too.
    """
    by_name = {key.lower(): folder for key, folder in keys.items()}
    return [(column, by_name[column.lower()]) for column in columns if column.lower() in by_name]


def _refuse_output_collisions(shards: list[Shard]) -> None:
    """Two inputs must never write one output file (`a.parquet` and `a.pq` both make `a.parquet`)."""
    writers: dict[str, str] = {}
    clashes = []
    for shard in shards:
        first = writers.setdefault(shard.output_relpath, shard.shard_id)
        if first != shard.shard_id:
            clashes.append(f"{first} and {shard.shard_id} would both write {shard.output_relpath}")
    if clashes:
        raise InputError("input: " + "; ".join(clashes[:5]) + (f" (and {len(clashes) - 5} more)" if len(clashes) > 5
                         else "") + ". Output files are named after the input file with its suffix replaced by "
                         ".parquet: rename one of them.")


def bundle(shards: list[Shard], min_bundles: int, target_rows: int = 131072, max_shards: int = 64) -> list[list[Shard]]:
    """Group consecutive small shards so that one task scores several of them.

    A Ray task costs a few milliseconds to schedule; a shard of ten rows costs less than that to score. Bundles
    grow until they hold `target_rows` rows or `max_shards` shards, but never so large that fewer than
    `min_bundles` remain (every worker must stay busy). Big shards stay bundles of one. Each shard in a bundle is
    still committed on its own.
    """
    if not shards:
        return []
    cap = max(1, min(max_shards, len(shards) // max(1, min_bundles)))
    bundles: list[list[Shard]] = []
    current: list[Shard] = []
    rows = 0
    for shard in shards:
        if current and (rows + shard.num_rows > target_rows or len(current) >= cap):
            bundles.append(current)
            current, rows = [], 0
        current.append(shard)
        rows += shard.num_rows
    bundles.append(current)
    return bundles
