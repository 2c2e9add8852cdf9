"""kithara_fs: audio streams mounted as files."""

__version__ = "0.1.0"
