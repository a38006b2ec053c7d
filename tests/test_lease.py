"""The output's lease and the store's create-if-absent it stands on, on local disk and on the S3 server."""

from __future__ import annotations

import errno
import os
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path

import pytest

from shardscore.lease import Lease, LeaseHeld, this_process, why_free
from shardscore.storage import StorageOptions, create_json, read_json, resolve
from support import S3_ENV


def test_create_json_creates_once_on_local_disk(tmp_path: Path):
    loc = resolve(str(tmp_path))
    assert create_json(loc, loc.join("a", "x.json"), {"n": 1})
    assert not create_json(loc, loc.join("a", "x.json"), {"n": 2})
    assert read_json(loc, loc.join("a", "x.json")) == {"n": 1}
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["x.json"]  # no temporary left behind


def test_create_json_without_hard_links_falls_back_to_exclusive_creation(tmp_path: Path, monkeypatch):
    def no_links(src, dst):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    loc = resolve(str(tmp_path))
    assert create_json(loc, loc.join("x.json"), {"n": 1})
    assert not create_json(loc, loc.join("x.json"), {"n": 2})
    assert read_json(loc, loc.join("x.json")) == {"n": 1}


@pytest.mark.s3
def test_create_json_creates_once_on_s3(s3, monkeypatch):
    for key, value in S3_ENV.items():
        monkeypatch.setenv(key, value)
    bucket = f"create-{uuid.uuid4().hex[:8]}"
    s3.client().create_bucket(Bucket=bucket)
    loc = resolve(f"s3://{bucket}/out", StorageOptions(s3.endpoint))
    assert create_json(loc, loc.join("x.json"), {"n": 1})
    assert not create_json(loc, loc.join("x.json"), {"n": 2})
    assert read_json(loc, loc.join("x.json")) == {"n": 1}


@pytest.mark.s3
def test_on_s3_a_heartbeat_paused_past_its_generation_check_lands_nothing_after_a_takeover(s3, monkeypatch):
    """The first holder's heartbeat passed its check and was paused; a second run took the lease over meanwhile.
    The taker rewrote the first's file (`superseded_by`), so the first's conditional write fails."""
    for key, value in S3_ENV.items():
        monkeypatch.setenv(key, value)
    bucket = f"beat-{uuid.uuid4().hex[:8]}"
    s3.client().create_bucket(Bucket=bucket)
    loc = resolve(f"s3://{bucket}/out", StorageOptions(s3.endpoint))
    first = Lease.acquire(loc, replace(this_process(ttl=2), host="elsewhere"))
    assert first.heartbeat()
    taken = []

    def taken_over_while_paused() -> None:
        taken.append(Lease.acquire(loc, this_process(ttl=30), clock=lambda: time.time() + 2.2))

    assert not first._file.write({**read_json(loc, Lease._path(loc, 1)), "heartbeat_at": 0.0},
                                 check=taken_over_while_paused)
    assert taken[0].holder.generation == 2 and "no heartbeat for 2 s" in taken[0].took_over
    assert read_json(loc, Lease._path(loc, 1))["superseded_by"] == 2
    assert not first.heartbeat() and first.lost.is_set()


@pytest.mark.s3
def test_on_s3_a_heartbeat_that_landed_without_an_answer_is_not_taken_for_a_takeover(s3, monkeypatch):
    """A PUT that reached S3 but whose answer was lost (a reset connection): the next heartbeat reads the ETag again
    rather than find its own write "another writer's", and the lease stays held."""
    from shardscore import storage

    for key, value in S3_ENV.items():
        monkeypatch.setenv(key, value)
    bucket = f"beat-{uuid.uuid4().hex[:8]}"
    s3.client().create_bucket(Bucket=bucket)
    loc = resolve(f"s3://{bucket}/out", StorageOptions(s3.endpoint))
    lease = Lease.acquire(loc, this_process(ttl=30))
    assert lease.heartbeat()
    real = storage._put_s3

    def landed_without_an_answer(*args, **kwargs):
        real(*args, **kwargs)
        raise OSError("connection reset by peer")

    monkeypatch.setattr(storage, "_put_s3", landed_without_an_answer)
    with pytest.raises(OSError):
        lease.heartbeat()
    landed = read_json(loc, Lease._path(loc, 1))["heartbeat_at"]
    monkeypatch.setattr(storage, "_put_s3", real)
    assert lease.heartbeat() and not lease.lost.is_set()
    assert read_json(loc, Lease._path(loc, 1))["heartbeat_at"] == lease.holder.heartbeat_at > landed


def test_a_holder_is_free_when_released_expired_or_gone_from_this_host():
    me = this_process(ttl=30)
    now = time.time()
    assert why_free(me, now, me.host) == ""
    assert why_free(replace(me, released=True), now, me.host) == "released"
    assert why_free(replace(me, heartbeat_at=now - 31), now, "other") == "no heartbeat for 31 s (lease ttl 30 s)"
    gone = replace(me, pid=me.pid, pid_started=me.pid_started - 100)  # the pid was reused by another process
    assert why_free(gone, now, me.host) == f"its process {me.pid} on this host is gone"
    assert why_free(gone, now, "another-host") == ""  # a pid on another host cannot be checked from here


def test_of_two_runs_racing_for_the_lease_exactly_one_gets_it(tmp_path: Path):
    loc = resolve(str(tmp_path / "out"))
    start = threading.Barrier(8)
    won, refused = [], []

    def race() -> None:
        start.wait()
        try:
            won.append(Lease.acquire(loc, this_process(ttl=30)))
        except LeaseHeld as exc:
            refused.append(str(exc))

    threads = [threading.Thread(target=race) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1 and len(refused) == 7, (won, refused)
    assert all("is being written by another run" in r for r in refused)


def test_a_holder_that_was_taken_over_knows_it_lost_the_lease(tmp_path: Path):
    loc = resolve(str(tmp_path / "out"))
    first = Lease.acquire(loc, replace(this_process(ttl=2), host="elsewhere"))
    second = Lease.acquire(loc, this_process(ttl=30), clock=lambda: time.time() + 2.2)  # past the first's ttl
    assert second.holder.generation == 2 and "no heartbeat for 2 s" in second.took_over
    assert not first.heartbeat() and first.lost.is_set()
    first.release()  # a lost lease is not released over the new holder's
    assert not read_json(loc, Lease._path(loc, 2))["released"]
    second.release()
    assert read_json(loc, Lease._path(loc, 2))["released"]
    third = Lease.acquire(loc, this_process(ttl=30))
    assert third.holder.generation == 3 and third.took_over == ""  # released: taken without a word
    assert sorted(p.name for p in (tmp_path / "out" / "_shardscore" / "lease").iterdir()) == [
        "00000002.json", "00000003.json"]  # older generations are cleaned up
