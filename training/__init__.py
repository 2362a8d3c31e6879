"""Training, evaluation and benchmarks: everything that measures or makes a model.

This package depends on ``models`` (and on ``index`` for the ranking evaluation);
nothing that serves imports it. The ``mmsearch train / eval / bench`` commands load
it when they run, so ``mmsearch serve`` never does.
"""
