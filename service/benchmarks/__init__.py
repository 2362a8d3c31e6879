"""``mmsearch bench serve``: the service over HTTP against raw FAISS and a peer.

``workload`` draws the vectors and builds the snapshot, ``load`` starts servers and
drives them, ``serve`` runs the side-by-side measurement, ``report`` prints and plots
it. ``peer_chroma`` runs in chromadb's own interpreter and imports nothing from here.
"""
