"""The engine: kithara's read contract over any source, and the downloads that serve it.

``scheduler`` decides what to download, when and how much (cursors, read-ahead, how
requests grow, the tail after the head); ``stream`` answers one handle's reads (``try_read``
with typed outcomes, seek epochs, wait budgets) over a seekable source or a pipe-like feed.
It imports no kind of source, only their interfaces (``sources.base``), and never speaks
FUSE.
"""
