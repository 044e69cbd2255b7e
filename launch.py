"""Launch one Director per partition of a batch job and drive them.

Run ``python launch.py --help`` for the flags. With no flags it simulates a
4-node batch job on this machine, splits it into 2 partitions, starts 2
Directors on Academy's in-process exchange and sends each one ``md_sim`` and
``md_sim_batch`` calls.

The command line lives in ``actors/cli/`` (``actors.cli.main``); this file
only runs it, so that ``python launch.py ...`` works from the repository.
"""

from __future__ import annotations

import sys

from actors.cli.main import main

if __name__ == '__main__':
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:
        # Output piped into `head` and the like: not an error.
        sys.stderr.close()
        sys.exit(0)
