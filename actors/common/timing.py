"""How long stopping and watching may take: one set of bounds, named by what they bound.

Every module that stops a process or polls for a stop takes its bounds from here,
so that the guarantees the README states (a cancelled call stops within
``CANCEL_POLL + STOP_GRACE``, no Parsl process outlives its Director by more
than ``ORPHAN_BOUND``) follow from one place.
"""

from __future__ import annotations

STOP_GRACE = 2.0
"""Seconds a process (or a tool told to unwind) has after SIGTERM before SIGKILL."""

CANCEL_POLL = 0.5
"""Seconds between checks of a running call's cancel file and deadline, in its worker."""

PARENT_POLL = 0.25
"""Seconds between the watchdog's checks that the Director that started it is alive."""

ORPHAN_BOUND = 5.0
"""No interchange, ``mpiexec`` or worker pool outlives its Director by more than this."""

KILL_WAIT = 5.0
"""Seconds to wait for killed processes (SIGKILL) to be gone before going on."""

EXCHANGE_POLL = 2.0
"""Seconds between a waiting caller's checks that the exchange still knows its mailboxes."""

DIRECTOR_MAILBOX_POLL = 5.0
"""Seconds between a Director's checks that the exchange still knows its own mailbox."""

RESTART_PROBE = 2.0
"""Seconds between two questions for a Director's incarnation while calls to it are pending."""

RESTART_PROBE_TIMEOUT = 10.0
"""Seconds a Director has to say its incarnation before the question counts as unanswered."""

POOL_START_TIMEOUT = 120.0
"""Seconds a new node's worker pool gets to connect before the node is given up."""

RELEASE_DEADLINE = 60.0
"""Seconds a leaving node's running calls get to finish before they are stopped and rerun."""
