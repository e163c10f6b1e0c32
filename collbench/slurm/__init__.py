"""Slurm: sbatch scripts for a sweep over node counts, and their submission.

:func:`~collbench.slurm.render.plan` reads an experiment file (``[run]`` plus ``[slurm]``)
and an optional site profile, and renders one script per job from the templates in the
project's ``slurm/`` folder; :func:`~collbench.slurm.submit.submit` submits them. Nothing
here imports MPI, so scripts can be rendered on a login node or a laptop.
"""

from collbench.slurm.render import Job, Sweep, plan
from collbench.slurm.settings import SlurmSettings
from collbench.slurm.submit import dry_run, submit

__all__ = ["Job", "SlurmSettings", "Sweep", "dry_run", "plan", "submit"]
