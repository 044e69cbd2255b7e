"""MPI node admission: first come, first served with EASY backfill, on a simulated clock.

``simulate`` drives [`NodeQueue`][actors.director.admission.NodeQueue] with
discrete events (every call sent at time 0, in order; each runs exactly its
declared duration), so each property is checked exactly, without timing noise.
Real MPI calls through a Director are in ``test_mpi.py``.
"""

from __future__ import annotations

import heapq
import random

import pytest

from actors.director.admission import NodeQueue
from actors.director.admission import declared_duration

pytestmark = pytest.mark.timeout(60)

PATTERN = [(1, 1.0), (2, 1.0), (3, 1.0), (2, 1.0), (1, 1.0), (4, 1.0)] * 3
"""``python -m bench mpi``'s fixed pattern: (nodes, seconds)."""


def simulate(
    total: int,
    calls: list[tuple[int, float | None]],
    *,
    backfill: bool,
    actual: list[float] | None = None,
) -> tuple[list[float], list[tuple[int, float, float | None]]]:
    """Start times of ``calls`` (all queued at 0), and each blocked head's first reservation.

    ``actual`` are the real run times (default: the declared ones; ``None``
    declared runs 1 s). Also checks, at every event, that no more than
    ``total`` nodes are held.
    """
    queue = NodeQueue(total, backfill=backfill)
    run_times = actual or [d if d is not None else 1.0 for _, d in calls]
    start: dict[int, float] = {}
    ends: list[tuple[float, int]] = []
    reservations: dict[int, float | None] = {}

    def started(tickets: list[int], now: float) -> None:
        for ticket in tickets:
            start[ticket] = now
            heapq.heappush(ends, (now + run_times[ticket], ticket))
        held = sum(calls[t][0] for t in start if t not in finished)
        assert held <= total
        assert queue.free == total - held
        if queue.waiting and queue._waiting[0].ticket not in reservations:
            head = queue._waiting[0].ticket
            reservations[head] = queue.reservation.at if queue.reservation else None

    finished: set[int] = set()
    for ticket, (nodes, duration) in enumerate(calls):
        started(queue.request(ticket, nodes, duration, 0.0), 0.0)
    while ends:
        now, ticket = heapq.heappop(ends)
        finished.add(ticket)
        started(queue.finish(ticket, now), now)
    assert len(start) == len(calls)
    assert queue.waiting == 0
    assert queue.free == total
    return [start[t] for t in range(len(calls))], [
        (head, at, None) for head, at in reservations.items()
    ]


def utilisation(total: int, calls: list[tuple[int, float | None]], starts: list[float]) -> float:
    ends = [s + (d or 1.0) for s, (_, d) in zip(starts, calls, strict=True)]
    demand = sum(n * (d or 1.0) for n, d in calls)
    return demand / (total * max(ends))


def test_fixed_pattern_packs_better_than_first_come_first_served():
    fcfs, _ = simulate(4, PATTERN, backfill=False)
    packed, _ = simulate(4, PATTERN, backfill=True)
    assert utilisation(4, PATTERN, fcfs) == pytest.approx(0.81, abs=0.01)
    assert utilisation(4, PATTERN, packed) >= 0.85
    assert max(packed) < max(fcfs)


@pytest.mark.parametrize('seed', range(40))
def test_random_mixes_never_delay_a_blocked_head(seed: int):
    """Every call that blocks the queue starts no later than its reservation, and
    no later than first come, first served would have started it."""
    rng = random.Random(seed)
    calls = [(rng.randint(1, 4), float(rng.randint(1, 6))) for _ in range(rng.randint(5, 40))]
    fcfs, _ = simulate(4, calls, backfill=False)
    packed, reservations = simulate(4, calls, backfill=True)
    first_head = None
    for head, at, _ in reservations:
        assert at is not None
        assert packed[head] <= at + 1e-9
        if first_head is None:
            first_head = head
    if first_head is not None:
        # The first call ever to block the queue: the same state under both rules.
        assert packed[first_head] <= fcfs[first_head] + 1e-9
    assert (
        utilisation(4, calls, packed) >= utilisation(4, calls, fcfs) - 1e-9
        or max(packed) <= max(fcfs) + 6
    )


def test_calls_without_a_declared_duration_never_delay_a_reservation():
    # A 3-node call runs (declared 5 s); a 4-node head waits for it (reservation at 5 s).
    # An undeclared 1-node call may run only on a node the head does not need: none is spare.
    queue = NodeQueue(4)
    assert queue.request(0, 3, 5.0, 0.0) == [0]
    assert queue.request(1, 4, 1.0, 0.0) == []
    assert queue.reservation is not None
    assert (queue.reservation.nodes, queue.reservation.at, queue.reservation.spare) == (4, 5.0, 0)
    assert queue.request(2, 1, None, 0.0) == []  # undeclared: could outlast the reservation
    assert queue.request(3, 1, 4.0, 0.0) == [3]  # ends at 4 s, before the reservation
    assert queue.backfilled == 1
    # With a 2-node head, the free node is spare at the reservation: the undeclared call fits.
    queue = NodeQueue(4)
    queue.request(0, 3, 5.0, 0.0)
    queue.request(1, 2, None, 0.0)
    assert queue.reservation.spare == 2
    assert queue.request(2, 1, None, 0.0) == [2]


def test_a_running_call_without_a_duration_leaves_first_come_first_served():
    queue = NodeQueue(4)
    assert queue.request(0, 3, None, 0.0) == [0]  # its end is unknown
    assert queue.request(1, 4, 1.0, 0.0) == []
    assert queue.reservation is None  # the head's nodes free up at an unknown time
    assert queue.request(2, 1, 0.5, 0.0) == []  # so nothing jumps the queue
    assert queue.finish(0, 3.0) == [1]
    assert queue.finish(1, 4.0) == [2]
    assert queue.backfilled == 0


def test_plain_first_come_first_served_when_backfill_is_off():
    queue = NodeQueue(4, backfill=False)
    queue.request(0, 3, 5.0, 0.0)
    queue.request(1, 4, 1.0, 0.0)
    assert queue.request(2, 1, 0.1, 0.0) == []
    assert queue.reservation is not None  # still reported in status()
    assert queue.backfilled == 0


def test_early_finishes_keep_the_reservation_bound():
    """Calls that end before their declared time: the head still starts by its reservation.

    Here both 2-node calls (declared 5 s) end after 1 s; at that instant the
    1-node call (1 s) is backfilled, as it ends long before the reservation
    (5 s), and the head starts when it ends (2 s): later than first come, first
    served would have (1 s), never later than its reservation. The bound
    against first come, first served needs calls that run as long as declared.
    """
    calls = [(2, 5.0), (2, 5.0), (4, 1.0), (1, 1.0)]
    starts, reservations = simulate(4, calls, backfill=True, actual=[1.0, 1.0, 1.0, 1.0])
    ((head, at, _),) = reservations
    assert (head, at) == (2, 5.0)
    assert starts[2] == 2.0 <= at
    assert starts[3] == 1.0


@pytest.mark.parametrize(
    ('params', 'timeout', 'expected'),
    [
        ({'duration': 3}, None, 3.0),
        ({'duration': 3}, 2.0, 2.0),
        ({'duration': 3}, 10.0, 3.0),
        ({}, 7.0, 7.0),
        ({}, None, None),
        ({'duration': True}, None, None),
        ({'duration': 'soon'}, None, None),
    ],
)
def test_declared_duration(params, timeout, expected):
    assert declared_duration(params, timeout) == expected
