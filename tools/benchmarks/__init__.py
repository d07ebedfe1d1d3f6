"""Benchmarks: each module is a script (``python -m latentscape.tools.benchmarks.<name>``)
that measures one part of the engine and prints the numbers the README quotes.

``gpu`` checks parity and times every kernel and the whole frame in one call (the
prepared script for a lent GPU); ``delivery``, ``generator``, ``layers``, ``plugins``
and ``stylize`` time their components on the CPU. (The renderer/training benchmark is
still ``latentscape.tools.bench``.)
"""
