"""Everything that stores and searches vectors.

Layout of an index directory (see :mod:`index.layout`)::

    <index_dir>/CURRENT           live version name, replaced atomically
    <index_dir>/<version>/        immutable snapshot (version: 20261122T053000123Z-3fa2c1)
        index.faiss               FAISS index, inner product; FAISS id == row
        catalog.sqlite            items(id, label, metadata JSON), vectors(row, item_id, kind)
        vectors.npy               float32 (n_vectors, dim), memory-mapped when serving
        manifest.json             model fingerprint, dim, factory, counts, source, time,
                                  tuned efSearch / nprobe and the recall they reach
    <index_dir>/.staging-<version>/  a build in progress; never loaded

Guarantees:

- A snapshot is written completely in its staging directory, renamed into place
  and only then named by CURRENT (temp file + fsync + ``os.replace``). A build
  that fails or is killed at any point leaves CURRENT and the snapshot it names
  untouched; stale staging directories are removed by the next build.
- A snapshot built with another model fingerprint is refused
  (:class:`~index.snapshot.FingerprintMismatchError`); file shapes are checked
  against the manifest on loading.
- Search returns one match per item (best row wins, its kind reported), exactly
  k items when at least k pass the kinds / metadata filters, which are applied
  inside the FAISS search (``IDSelectorBitmap``) rather than after it.
- :class:`~index.live.LiveSnapshot` hot-swaps to a newly published version;
  requests holding the old snapshot finish on it.

Modules: ``vector_index`` (FAISS wrapper), ``catalog`` (SQLite), ``manifest``,
``layout`` (CURRENT / publish / prune), ``snapshot`` (loading and search),
``live`` (hot swap), ``build`` (the streaming re-index pipeline), ``reuse`` (vectors
of unchanged items copied), ``changes`` (item upserts and deletes applied to the live
snapshot as one new one), ``chunks`` (a build's encoding split into chunks that
separate processes encode, then merged), ``autotune``
(the factory ``auto`` chooses, search knobs tuned to a recall target), ``backends``
and ``milvus_index`` (a snapshot's vectors in a Milvus collection instead of
``index.faiss``, chosen by ``MMSEARCH_INDEX_BACKEND``).
"""
