"""The mounted tree: nodes with stable inodes, built from the config through the kinds table,
and the services around it (background loading, open handles, status). Never FUSE.
"""

from .nodes import ROOT_INODE, DirNode, FileNode, ListingNode, Node, PipeNode, StreamNode
from .registry import Registry
from .tree import STATUS_FILE, Change, Tree

__all__ = [
    "ROOT_INODE", "STATUS_FILE", "Change", "DirNode", "FileNode", "ListingNode", "Node",
    "PipeNode", "Registry", "StreamNode", "Tree",
]  # fmt: skip
