"""The simulated job's launcher: one worker pool per made-up node, no network listener.

A simulated batch job (site ``local``) puts every "node" on this machine.
MPICH's hydra ``mpiexec -launcher fork`` did that placement, but hydra's
control port listens on every interface (``0.0.0.0``), one port per block,
and no flag or variable binds it elsewhere (``-iface``, ``-localhost`` and
``$HYDRA_IFACE`` only choose the address advertised to its proxies). The
simulation needs none of that: the block's own shell starts one pool per
distinct host of ``$PBS_NODEFILE`` and tells each the host it stands for in
``$PMI_HOSTNAME`` (with ``$PMI_RANK`` and ``$PMI_SIZE``), as hydra did, then
waits for them. The pools are the shell's children in the block's process
group, so Parsl's cancel (SIGTERM to the group) and the Director's block
tracking see them as before.
"""

from __future__ import annotations

from parsl.launchers.base import Launcher

SCRIPT = """set -e
SCRIPT_DIR="{script_dir}"
[[ -d $SCRIPT_DIR ]] || SCRIPT_DIR=""
CMD="${{SCRIPT_DIR:+$SCRIPT_DIR/}}cmd_$JOBNAME.sh"
cat << FORK_EOF > "$CMD"
{command}
FORK_EOF
chmod u+x "$CMD"

# {tasks_per_node} pool(s) per distinct host, in the nodefile's order (as mpiexec --ppn does).
if [ -z "$PBS_NODEFILE" ]; then
    HOSTS=localhost
else
    HOSTS=$(awk 'NF && !seen[$1]++ {{print $1}}' "$PBS_NODEFILE")
fi
SIZE=$(( $(printf '%s\\n' $HOSTS | wc -l) * {tasks_per_node} ))
RANK=0
PIDS=""
for HOST in $HOSTS; do
    for _ in $(seq {tasks_per_node}); do
        PMI_HOSTNAME=$HOST PMI_RANK=$RANK PMI_SIZE=$SIZE /usr/bin/sh "$CMD" &
        PIDS="$PIDS $!"
        RANK=$((RANK + 1))
    done
done
set +e
STATUS=0
for PID in $PIDS; do
    wait "$PID" || STATUS=$?
done
exit $STATUS
"""


class ForkLauncher(Launcher):
    """Start one worker pool per host of ``$PBS_NODEFILE`` on this machine."""

    def __init__(self, debug: bool = False) -> None:
        super().__init__(debug=debug)

    def __call__(
        self,
        command: str,
        tasks_per_node: int,
        nodes_per_block: int,
        script_dir: str = '',
    ) -> str:
        """The block's script: write the pool's command, start it once per host, wait.

        Args:
            command: The worker pool's command line.
            tasks_per_node: Pools per host (HTEX asks for 1: one pool runs a node's workers).
            nodes_per_block: The partition's size (its hosts come from the nodefile).
            script_dir: Where Parsl keeps the block's scripts.

        """
        return SCRIPT.format(
            command=command, tasks_per_node=max(tasks_per_node, 1), script_dir=script_dir
        )
