"""Parsl's ``SrunLauncher`` with one command file per block.

Parsl's launcher writes the pool command to ``cmd_$SLURM_JOB_NAME.sh``: the
allocation's name, the same for every block started inside it. A Director
starts one block per node, so its blocks overwrote each other's command:
pools on different nodes registered under one block ID, and a block could
read a half-written file and start nothing. This launcher names the file after
``$JOBNAME`` (set by ``LocalProvider`` for each block, as Parsl's own
``MpiExecLauncher`` uses) and moves it into place whole.

A block on a node of another batch job (an extra job the run grew into)
starts as a step of that job: ``--jobid`` names it, ``--overlap`` lets the
step start while an earlier step of the node is still being torn down, and
the run's own allocation's ``SLURM_*`` variables (which ``srun`` reads as
defaults: CPUs per task, node counts) are dropped for that one command.
"""

from __future__ import annotations

import shlex

from parsl.launchers import SrunLauncher

SCRIPT = """set -e
export CORES=$SLURM_CPUS_ON_NODE
export NODES=$SLURM_JOB_NUM_NODES
CMD="cmd_${{JOBNAME:?LocalProvider sets JOBNAME for each block}}.sh"
cat << SRUN_EOF > "$CMD.part"
{command}
SRUN_EOF
chmod u+x "$CMD.part"
mv -f "$CMD.part" "$CMD"
{environment}srun --ntasks {tasks} -l {overrides} bash "$CMD"
"""

OTHER_JOB_ENVIRONMENT = (
    'for VARIABLE in $(compgen -e | grep "^SLURM_"); do '
    '[ "$VARIABLE" = SLURM_CONF ] || unset "$VARIABLE"; done\n'
)
"""Drop the run's allocation's variables (not the configuration's path) before ``srun``."""


class BlockSrunLauncher(SrunLauncher):
    """Start a block's pools with ``srun``, from a command file of the block's own.

    Args:
        overrides: ``srun`` flags (the block's node, the site's flags).
        job: Another batch job whose node the block runs on (an extra job of
            the run): the pools start as a step of that job.

    """

    def __init__(self, overrides: str = '', job: str | None = None) -> None:
        if job is not None:
            overrides = f'--jobid={shlex.quote(job)} --overlap {overrides}'
        super().__init__(debug=False, overrides=overrides)
        self.job = job

    def __call__(
        self,
        command: str,
        tasks_per_node: int,
        nodes_per_block: int,
        script_dir: str = '',
    ) -> str:
        """The block's script lines that write its command file and ``srun`` it."""
        return SCRIPT.format(
            environment=OTHER_JOB_ENVIRONMENT if self.job is not None else '',
            command=command,
            tasks=tasks_per_node * nodes_per_block,
            overrides=self.overrides,
        )
