"""Training, evaluation and benchmarks: the bench, apart from what serves.

Depends on ``models`` (and ``index``); nothing under ``models``, ``index`` or
``service`` imports it, except the CLI commands that run it, lazily.
"""
