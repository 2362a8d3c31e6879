"""Everything that turns inputs (images, texts, recipes) into vectors.

This package never imports FastAPI or Redis: the serving and indexing layers
depend on it, never the reverse.
"""
