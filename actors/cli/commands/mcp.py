"""``launch.py mcp``: serve the Directors' tools to MCP clients (stdio or Streamable HTTP).

With no ``--attach``, it starts Directors itself from the same flags as
``launch.py`` (a simulated job by default) and stops them when it exits;
``--resume RUN_DIR`` restarts it on a run dir, answering the calls that
ended from their journals. ``--attach RUN_DIR`` serves the Directors of a
run that is already up (a networked exchange: ``redis://`` or ``http://``).

On stdio, the process's standard output is the protocol's channel: it is
kept for MCP alone, and everything else that would write there (this
process, Parsl, ``mpiexec``) writes to standard error instead.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import logging
import os
import pathlib
import signal
import sys
from collections.abc import AsyncIterator
from collections.abc import Sequence
from typing import Any

from actors.cli.parser import Parser
from actors.cli.parser import add_log_level
from actors.common.errors import ConfigurationError
from actors.common.errors import describe_os_error

logger = logging.getLogger('launch.mcp')

PRIVATE_UMASK = 0o077

START_MARGIN = 60.0
"""Seconds beyond the Directors' own start-up timeout that a request waits for them
(making the executor and the exchange, launching, the manifest)."""
JOIN_LIMIT = 60.0
"""Seconds a request waits for ``--attach`` to join a running run (its own timeout is 15 s)."""
READY = 'Directors ready'
"""What stderr says once the Directors are up (requests stop waiting then)."""


def build_parser() -> Parser:
    """The subcommand's own flags; the rest are ``launch.py``'s."""
    from actors.mcp.outputs import DEFAULT_LIMIT

    parser = Parser(
        prog='launch.py mcp',
        description=(
            "Serve the Directors' tools over the Model Context Protocol. Without --attach it "
            'starts Directors from the same flags as launch.py (see launch.py --help), e.g. '
            '`launch.py mcp --simulate-nodes 4 --partitions 2`.'
        ),
    )
    parser.add_argument(
        '--http',
        metavar='HOST:PORT',
        help='serve Streamable HTTP at http://HOST:PORT/mcp instead of stdio (port 0: a free '
        'one). Clients must send a bearer token: on loopback the one in '
        '~/.hpc-tool-calling/mcp-token (made once) unless --token-file; any other address '
        'needs --token-file',
    )
    parser.add_argument(
        '--token-file',
        metavar='FILE',
        help='bearer token clients must send over HTTP (a private file, mode 0600)',
    )
    parser.add_argument(
        '--attach',
        metavar='RUN_DIR',
        help='serve the Directors of a running run (networked exchange) instead of starting some',
    )
    parser.add_argument(
        '--inline-limit',
        type=int,
        default=DEFAULT_LIMIT,
        metavar='BYTES',
        help='values larger than this (as JSON) are written under the run dir and returned as '
        f'a resource link (default: {DEFAULT_LIMIT})',
    )
    add_log_level(parser)
    return parser


def main(argv: Sequence[str]) -> int:
    """Serve until the client goes (stdio) or the process is interrupted (HTTP)."""
    os.umask(os.umask(PRIVATE_UMASK) | PRIVATE_UMASK)
    parser = build_parser()
    args, rest = parser.parse_known_args(list(argv))
    logging.basicConfig(
        level=args.log_level,
        stream=sys.stderr,
        format='%(asctime)s %(levelname)s %(name)s: %(message)s',
    )
    try:
        serve = _prepare(parser, args, rest)
    except ConfigurationError as e:
        parser.exit(2, f'{parser.prog}: error: {e}\n')
    channel = None if args.http else _keep_stdout_for_mcp()
    # SIGTERM (a batch system's, a test's) stops the Directors as Ctrl-C does.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        asyncio.run(serve(channel))
    except ConfigurationError as e:
        parser.exit(2, f'{parser.prog}: error: {e}\n')
    except KeyboardInterrupt:
        pass
    except (OSError, TimeoutError) as e:
        print(f'{parser.prog}: failed: {type(e).__name__}: {e}', file=sys.stderr)
        return 1
    return 0


def _prepare(parser: Parser, args: argparse.Namespace, rest: list[str]) -> Any:
    """Check every flag before anything starts; returns the coroutine function to run."""
    from actors.mcp import transport

    if args.inline_limit < 0:
        raise ConfigurationError(f'--inline-limit {args.inline_limit}: give bytes >= 0')
    sock = None
    token = None
    if args.http is not None:
        host, port = transport.parse_bind(args.http)
        token = transport.read_token(args.token_file, host)
        sock = transport.bind_socket(host, port)
    elif args.token_file is not None:
        raise ConfigurationError('--token-file is for --http; stdio has one client, its parent')
    if args.attach is not None:
        if rest:
            raise ConfigurationError(
                f'--attach serves a running run: launch.py flags ({" ".join(rest)}) do not apply'
            )
        directors = _attached(args.attach)
        run_dir, limit = str(args.attach), JOIN_LIMIT
    else:
        plan = _plan(rest)
        directors = _launched(plan)
        run_dir, limit = str(plan.run_dir), _start_limit(plan)

    async def serve(channel: io.BufferedWriter | None) -> None:
        await _serve(
            parser.prog,
            directors,
            run_dir=run_dir,
            limit=limit,
            inline_limit=args.inline_limit,
            sock=sock,
            token=token,
            channel=channel,
        )

    return serve


def _start_limit(plan: Any) -> float:
    """Seconds a request waits for the plan's Directors: their own start-up timeout, and some."""
    from actors.common.timing import REMOTE_STARTUP_TIMEOUT
    from actors.common.timing import STARTUP_TIMEOUT

    remote = plan.executor == 'globus-compute'
    return (REMOTE_STARTUP_TIMEOUT if remote else STARTUP_TIMEOUT) + START_MARGIN


def _plan(rest: list[str]) -> Any:
    from actors.cli.parser import build_parser as build_run_parser
    from actors.cli.plan import plan_run

    run_parser = build_run_parser()
    run_parser.prog = 'launch.py mcp'
    try:
        return plan_run(run_parser.parse_args([*rest, '--quiet']))
    except OSError as e:
        # The run directory cannot be laid out (a full disk, a read-only file system).
        raise ConfigurationError(
            f'cannot prepare the run: {describe_os_error(e)}; nothing was started'
        ) from None


@contextlib.asynccontextmanager
async def _launched(plan: Any) -> AsyncIterator[Any]:
    from actors.cli.run import open_directors
    from actors.mcp.front import Front

    async with open_directors(plan) as (manager, handles, _statuses):
        yield Front(handles, plan.run_dir, manager)


def _attached(run_dir: str) -> Any:
    from actors.mcp.front import attached

    return attached(run_dir)


async def _serve(
    prog: str,
    directors: Any,
    *,
    run_dir: str,
    limit: float,
    inline_limit: int,
    sock: Any,
    token: tuple[str, pathlib.Path] | None,
    channel: io.BufferedWriter | None,
) -> None:
    """Serve at once; bring the Directors up meanwhile.

    An MCP host gives a server about 60 s for its first answer, less than
    worker pools can take to start: ``initialize`` and ``tools/list`` are
    answered while the Directors start, and a request that needs them waits
    ([`Readiness`][actors.mcp.readiness.Readiness]). If they cannot start,
    requests are told why; the error then ends the server as it did before
    serving: at once over HTTP, when its client leaves over stdio (so that the
    client can still learn why).

    Raises:
        Exception: Why the Directors did not start (``ConfigurationError``,
            ``OSError``...), once the server has stopped.

    """
    from actors.mcp import transport
    from actors.mcp.readiness import Readiness
    from actors.mcp.server import build_server

    readiness = Readiness(limit)
    stop = asyncio.Event()
    serving = asyncio.current_task()
    starter = asyncio.create_task(
        _bring_up(prog, directors, readiness, inline_limit=inline_limit, stop=stop)
    )
    if sock is not None and serving is not None:
        # Over HTTP nobody else ends the server: a failed start does.
        starter.add_done_callback(lambda task: _failed(task) and serving.cancel())
    server = build_server(readiness)
    try:
        if sock is None:
            where = f'run dir {run_dir}; serving MCP on stdio while the Directors start'
            print(f'{prog}: {where}', file=sys.stderr, flush=True)
            assert channel is not None
            await transport.serve_stdio(server, channel)
        else:
            assert token is not None
            secret, token_file = token

            def ready(url: str) -> None:
                # The file, never the token: stderr may end in a batch log others read.
                print(
                    f'{prog}: run dir {run_dir}; serving MCP on {url} while the Directors start\n'
                    f'{prog}: clients send "Authorization: Bearer TOKEN", TOKEN from '
                    f'{token_file}',
                    file=sys.stderr,
                    flush=True,
                )

            await transport.serve_http(server, sock, secret, ready)
    except asyncio.CancelledError:
        if not _failed(starter) or serving is None:
            raise
        serving.uncancel()  # cancelled by the failed start, whose error follows
    finally:
        stop.set()
        if not starter.done():
            # A start under way finishes, then stops: no Director is left half up.
            await asyncio.shield(starter)
    starter.result()


def _failed(task: asyncio.Task[None]) -> bool:
    """True if ``task`` ended with an error."""
    return task.done() and not task.cancelled() and task.exception() is not None


async def _bring_up(
    prog: str,
    directors: Any,
    readiness: Any,
    *,
    inline_limit: int,
    stop: asyncio.Event,
) -> None:
    """Start (or join) the Directors, serve them through ``readiness`` until ``stop``.

    Raises:
        Exception: Why they did not start, after ``readiness`` was told.

    """
    from academy.exchange.client import exchange_context

    from actors.mcp.book import CallBook
    from actors.mcp.outputs import Outputs

    try:
        async with directors as front:
            book = CallBook(front, Outputs(front.run_dir, inline_limit))
            try:
                resent = book.open()
                # A launch's handles find their exchange in the Manager's context, set in this task.
                readiness.ready(book, exchange_context.get(None))
                said = f'; sent {resent} unfinished call(s) again' if resent else ''
                print(f'{prog}: {READY}{said}', file=sys.stderr, flush=True)
                await stop.wait()
            finally:
                await book.close()
    except Exception as e:
        reason = describe_os_error(e) if isinstance(e, OSError) else str(e)
        readiness.failed(f'{type(e).__name__}: {reason}')
        print(f'{prog}: the Directors did not start: {reason}', file=sys.stderr, flush=True)
        raise


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _keep_stdout_for_mcp() -> io.BufferedWriter:
    """Keep file descriptor 1 for MCP; point fd 1 (and ``sys.stdout``) at stderr."""
    sys.stdout.flush()
    channel = os.fdopen(os.dup(1), 'wb')
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return channel
