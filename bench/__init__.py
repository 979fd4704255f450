"""``make bench``: logpipe's throughput against ceilings measured in the same run.

Run ``python -m bench.run`` (or ``--quick`` for a smoke run); see :mod:`bench.run`.
"""
