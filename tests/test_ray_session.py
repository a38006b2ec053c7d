"""The run's in-flight bound (ray_session.InFlightBound): what the autoscaler is shown of a run's work."""

from __future__ import annotations

from shardscore.ray_session import InFlightBound


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_without_max_in_flight_the_bound_follows_the_cluster_as_it_grows_and_never_shrinks():
    clock, slots = Clock(), [1]
    bound = InFlightBound(None, 1, lambda: slots[0], every=5.0, clock=clock)
    assert bound() == 2
    slots[0] = 2
    clock.now = 4.9
    assert bound() == 2, "read again before `every` seconds"
    clock.now = 5.0
    assert bound() == 4
    slots[0] = 4
    clock.now = 10.0
    assert bound() == 8
    slots[0] = 1  # nodes gone (or idle ones scaled down): the run's queue stays as deep
    clock.now = 15.0
    assert bound() == 8


def test_max_in_flight_is_kept_as_given_and_the_cluster_is_not_asked():
    clock = Clock()

    def slots() -> int:
        raise AssertionError("cluster_slots called although --max-in-flight was given")

    bound = InFlightBound(3, 1, slots, clock=clock)
    clock.now = 60.0
    assert bound() == 3
