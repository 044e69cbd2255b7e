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

SEND_TIMEOUT = 2.0
"""Seconds a submit may wait to hand its task to the interchange's socket.

HTEX's task socket has no high-water mark, so a send waits only while no
interchange is connected: one that died. Unbounded, that send would hold the
submitting thread (a Director's event loop, or Parsl's result thread for a
retry) and the DFK's submit lock for good; bounded, the call fails as lost
with its interchange and runs again on the replacement DFK.
"""

UNBLOCK_TIMEOUT = 5.0
"""Seconds a command to a lost interchange gets to fail once its context is terminated."""

COMMAND_TIMEOUT = 30.0
"""Seconds ``ask_interchange`` waits for a live interchange's answer."""

LOST_POLL = 0.1
"""Seconds between looks, while waiting for an interchange's answer, at whether it was lost."""

CLEANUP_TIMEOUT = 60.0
"""Seconds ``DataFlowKernel.cleanup`` may take before what is left of Parsl is stopped by hand."""

LOST_CLEANUP_TIMEOUT = 5.0
"""The same for a DFK whose interchange died: its cleanup can block forever (see
``InterchangeWatch``), so it gets only long enough to stop its other executors."""

WATCH_INTERVAL = 1.0
"""Seconds between telling the watchdog about new (replacement) blocks."""

SQUEUE_TIMEOUT = 10.0
"""Seconds ``squeue`` gets to tell a Slurm job's end time."""

STATUS_MAX_AGE = 0.25
"""Seconds old the pools' snapshot may be when a Director answers ``status``.

Routing and progress ask several times a second; they share the snapshot the
watch, drains and adoptions take rather than each asking the interchange.
"""
