"""The FUSE adapter: the only package that imports pyfuse3 for serving requests.

``operations`` answers the kernel (attributes, folders, opens, reads, poll, xattrs);
``errnos`` holds the one exception → errno table. It never touches a cache entry and never
names a kind: it sees nodes, streams and status records.
"""

from .errnos import errno_for
from .operations import KitharaOperations

__all__ = ["KitharaOperations", "errno_for"]
