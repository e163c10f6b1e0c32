"""``collbench slurm render|submit``: sbatch scripts from an experiment file."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from collbench.errors import CollbenchError

PROFILE_ENV = "COLLBENCH_SLURM_PROFILE"
"""A site profile used when ``--profile`` is not given (a site can set it for everyone)."""

_FLAGS = (("nodes", "node counts to sweep, e.g. 2,4,8"),
          ("ntasks-per-node", "ranks per node, one or a comma list (default: GPUs per node, or 1)"),
          ("gpus-per-node", "GPUs per node (GPU nodes: one rank per GPU)"),
          ("partition", "Slurm partition"), ("account", "Slurm account"), ("qos", "Slurm QOS"),
          ("time", "time limit per job, e.g. 00:30:00"),
          ("constraint", "node features, e.g. ib&skylake"),
          ("shape", "cpu (MPI), gpu (NCCL) or ib (verbs); default: from [run] transport"),
          ("launcher", "srun (default) or mpiexec"),
          ("mpi", "srun --mpi plugin: pmi2 (MPICH, default) or pmix (Open MPI)"),
          ("results", "folder that gets the sweep's <name>-<run id>/ (default results)"),
          ("run-id", "names the sweep folder (default: the time now); reuse it to resume"),
          ("mode", "jobs (one per configuration, default), array (one job array) or chain "
                   "(one after another)"))


def register(sub) -> None:
    p = sub.add_parser("slurm", help="render or submit sbatch scripts for an experiment",
                       description="Turn an experiment file into sbatch scripts, one job per "
                       "(nodes, ranks per node), as independent jobs, a job array or a chain.")
    actions = p.add_subparsers(dest="slurm_command", metavar="ACTION")
    actions.required = True
    render = actions.add_parser("render", help="print (or write) ready-to-submit scripts")
    _common(render)
    render.add_argument("-o", "--output-dir", metavar="DIR",
                        help="write the scripts into DIR instead of printing them")
    render.set_defaults(func=render_command)
    submit = actions.add_parser("submit", help="submit the scripts and print the job ids")
    _common(submit)
    submit.add_argument("--dry-run", action="store_true",
                        help="print the sbatch commands and scripts; submit nothing")
    submit.set_defaults(func=submit_command)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("experiment", metavar="EXPERIMENT.toml",
                   help="experiment file: [run] (the sweep) and optional [slurm]")
    for flag, text in _FLAGS:
        p.add_argument(f"--{flag}", help=text)
    p.add_argument("--profile", metavar="FILE",
                   help="site profile (TOML with [slurm]), or a shipped one by name (localhost, "
                   f"example-site, gpu-site); default ${PROFILE_ENV} if set")
    p.add_argument("--template", metavar="FILE", help="an sbatch template of your own")
    p.add_argument("--sbatch-option", action="append", metavar="OPT", dest="sbatch",
                   help="extra sbatch option: --sbatch-option=--exclusive or --sbatch-option "
                   "mem=0 (the leading -- may be left out; repeatable)")


def _sweep(args: argparse.Namespace):
    from collbench.slurm.render import plan

    overrides = {flag.replace("-", "_"): getattr(args, flag.replace("-", "_"))
                 for flag, _ in _FLAGS}
    if args.sbatch:
        overrides["sbatch"] = [o if o.startswith("-") else f"--{o}" for o in args.sbatch]
    profile = args.profile or os.environ.get(PROFILE_ENV) or None
    return plan(args.experiment, overrides, profile, args.template)


def render_command(args: argparse.Namespace) -> int:
    sweep = _sweep(args)
    if args.output_dir:
        folder = Path(args.output_dir)
        for job in sweep.jobs:
            path = folder / f"{job.name}.sbatch"
            try:
                folder.mkdir(parents=True, exist_ok=True)
                path.write_text(job.script)
            except OSError as e:
                raise CollbenchError(f"cannot write {path}: {e.strerror or e}") from None
            print(path)
    elif len(sweep.jobs) == 1:
        sys.stdout.write(sweep.jobs[0].script)
    else:
        for job in sweep.jobs:
            print(f"# ===== {job.name}.sbatch =====")
            sys.stdout.write(job.script)
    if sweep.settings.mode == "chain" and len(sweep.jobs) > 1:
        print("collbench: a chain: submit each script with --dependency=afterany:<previous job "
              "id>, or use 'collbench slurm submit --mode chain'", file=sys.stderr)
    print(f"collbench: the Slurm logs go to {sweep.folder}; create it before sbatch "
          f"(mkdir -p {sweep.folder}) or use 'collbench slurm submit'", file=sys.stderr)
    return 0


def submit_command(args: argparse.Namespace) -> int:
    from collbench.slurm.submit import dry_run, submit

    sweep = _sweep(args)
    if args.dry_run:
        sys.stdout.write(dry_run(sweep))
        return 0
    for done in submit(sweep):
        print(f"{done.job_id}\t{done.script}")
    print(f"collbench: results in {sweep.folder}", file=sys.stderr)
    return 0
