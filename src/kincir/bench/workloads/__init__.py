"""The workload families, one module each (W1-W7, M, H, G, R): the code each side runs.

A family's functions take the run's ``Sizes`` and return what one timed run measured (a
``Sample``, or samples by name); which of them a workload compares, in which unit and against
which goal, is said once for all of them in ``kincir.bench.suite``.
"""
