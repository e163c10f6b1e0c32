"""The simulator: the schedules of :mod:`algorithms` run as SimPy processes over described
networks, beside their closed-form α-β-γ models, calibrated from measurements.

- :func:`sim.executor.simulate` runs a :class:`~algorithms.schedule.Schedule` on a
  :class:`~sim.network.NetworkSpec` (see :mod:`sim.topology` and :mod:`sim.fabric`).
- :mod:`sim.analytic` holds the closed forms; :mod:`sim.calibrate` fits their figures.
- :func:`sim.presets.load_network` reads a preset or a TOML file.
- :func:`sim.predict.predict_seconds` is the one-call API behind ``collbench sim``.

Nothing here imports mpi4py, CuPy or pyverbs. ``docs/simulator.md`` describes the model.
"""
