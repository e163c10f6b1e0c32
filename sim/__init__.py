"""The simulator: the schedules of :mod:`algorithms` run as SimPy processes over described
networks, beside their closed-form α-β-γ models, calibrated from measurements.

- :func:`collbench.sim.executor.simulate` runs a :class:`~collbench.algorithms.schedule.Schedule` on a
  :class:`~collbench.sim.network.NetworkSpec` (see :mod:`collbench.sim.topology` and
  :mod:`collbench.sim.fabric`, the flow solver, which knows links and flows only); what a
  node's CPUs and memory add is the host model's (:mod:`collbench.sim.host`).
- :mod:`collbench.sim.analytic` holds the closed forms; :mod:`collbench.sim.calibrate` fits their figures.
- :func:`collbench.sim.presets.load_network` reads a preset or a TOML file.
- :func:`collbench.sim.predict.predict_seconds` is the one-call API behind ``collbench sim``.

Nothing here imports mpi4py, CuPy or pyverbs. ``docs/simulator.md`` describes the model.
"""
