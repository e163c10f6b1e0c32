"""sbatch templates (one per cluster shape) and site profiles, shipped as package data of
``collbench.templates``; read them with :func:`collbench.slurm.render.template_dir`."""
