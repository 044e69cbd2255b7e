"""Every timing bound of the package, in one place, named by what it bounds.

Every module that waits, polls, times out or stops a process takes its bounds
from here, so that the guarantees the README states (a cancelled call stops
within ``CANCEL_POLL + STOP_GRACE``, no Parsl process outlives its Director by
more than ``ORPHAN_BOUND``, a silent Director is fenced after ``DEAD_AFTER``)
follow from one file. Counts (retries, batch sizes) and request limits
(``actors.common.limits``) are not here.
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

STARTUP_TIMEOUT = 300.0
"""Seconds to wait for Directors started here (or in local processes) to be ready."""

ATTACH_TIMEOUT = 10.0
"""Seconds a recorded Director gets to answer a ping before --resume starts a new one."""

RELEASE_TIMEOUT = 60.0
"""Seconds to wait for re-attached Directors to shut down at the end of a resumed run."""

LOST_STOP_TIMEOUT = 120.0
"""Seconds Directors started here get to stop by themselves once the exchange lost its state."""

COORDINATOR_STOP_TIMEOUT = 30.0
"""Seconds the node coordinator gets to stop before the Directors stop without it."""

REMOTE_STARTUP_TIMEOUT = 3600.0
"""Seconds to wait for Directors on a Globus Compute endpoint (the batch job queues)."""

PROGRESS_POLL = 0.5
"""Seconds between status polls."""

STATUS_TIMEOUT = 10.0
"""Seconds a Director has to answer ``status`` before it is routed around."""

MODEL_TIMEOUT = 300.0
"""Seconds one model request may take (a large model on a busy server is slow)."""

MODEL_CONNECT_TIMEOUT = 10.0
"""Seconds to open a connection to the endpoint."""

MODEL_PROBE_TIMEOUT = 15.0
"""Seconds the endpoint gets to answer ``GET /models`` before the Directors start."""

SHUTDOWN_BOUND = 120.0
"""Seconds launched agents get to stop once asked (a Director drains and stops its DFK)."""

STOP_REQUEST_TIMEOUT = 10.0
"""Seconds to send one agent its shutdown request."""

STOPPED_SETTLE = 2.0
"""Seconds a Director that stopped before answering gets to end its task (for its error)."""

CANCEL_TIMEOUT = 10.0
"""Seconds a Director has to acknowledge a cancel."""

JOIN_TIMEOUT = 15.0
"""Seconds to join a running run's exchange."""

MCP_SESSION_IDLE_TIMEOUT = 30 * 60.0
"""Seconds an HTTP session may sit idle before it is closed."""

LOAD_TIMEOUT = 10.0
"""Seconds a Director gets to answer ``node_load``."""

DEAD_AFTER = 60.0
"""Default ``dead_after``: a fence kills, so silence must be long before it is called death."""

ORPHAN_GRACE = POOL_START_TIMEOUT + 10.0
"""Default ``orphan_grace``: the longest an adoption takes, and a look at the Directors."""

FENCE_WAIT = ORPHAN_BOUND + 5.0
"""Seconds a watchdog gets to confirm a fence before it is asked again (and an error logged)."""

LOOK_INTERVAL = 0.2
"""Seconds between looks at the pools while waiting for one to connect or drain."""

TAKE_TIMEOUT = 30.0
"""Seconds an admitted MPI call waits for its nodes to stop being started or drained."""
