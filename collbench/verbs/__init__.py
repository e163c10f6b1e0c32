"""The verbs transport's protocol logic in plain Python: no pyverbs import anywhere here.

:mod:`collbench.verbs.protocol` holds the wire formats (immediate values, the clear-to-send
control message), segment planning, the receiver's slot book and the sender's credit book,
the memory-registration cache, the polling clock and the switches read from
``COLLBENCH_VERBS_*`` environment variables. :mod:`collbench.rdma` is the thin pyverbs layer
and :mod:`collbench.transports.verbs` glues the two together.
"""
