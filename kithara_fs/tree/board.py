"""What the mount tells a person: one :class:`~kithara_fs.sources.Status` per stream.

Owns building the status of a node (what its source or feed says of itself, plus its path,
its readers, the audio buffered ahead of them and its state now), of a listing folder whose
load failed, and of the whole mount (``.kithara/status.json``, read by ``kithara-fs
status``). The extended attributes come from the same records.

It must never import pyfuse3, and never show a secret: URLs and errors are redacted.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from ..engine.scheduler import Scheduler
from ..engine.stream import Stream
from ..redact import redact_text
from ..sources import Status
from .handles import Handles
from .nodes import FileNode, ListingNode, PipeNode, StreamNode
from .tree import Tree


class StatusBoard:
    """Status records of one mount's streams."""

    def __init__(self, tree: Tree, handles: Handles, scheduler: Scheduler, mountpoint: str):
        self.tree = tree
        self.handles = handles
        self.scheduler = scheduler
        self.mountpoint = mountpoint
        self.started = time.time()

    def of(self, node: StreamNode) -> Status:
        """What a person wants to know about one stream (also its extended attributes)."""
        path = "/".join(self.tree.path_of(node))
        streams = self.handles.of(node)
        if isinstance(node, PipeNode):
            return self._pipe(node, path, len(streams))
        source = node.source
        rate = source.byte_rate()
        buffered = None
        if streams and rate:
            ahead = max(source.first_missing(s.timeline.resume_at) - s.timeline.resume_at
                        for s in streams if isinstance(s, Stream))  # fmt: skip
            buffered = round(max(0, ahead) / rate, 1)
        if self.scheduler.active(source):
            state = "downloading"
        elif source.last_error is not None:
            state = "error"
        elif source.complete():
            state = "cached"
        else:
            state = "idle"
        return source.status().replace(path=path, state=state, buffered_seconds=buffered,
                                       readers=len(streams))  # fmt: skip

    def _pipe(self, node: PipeNode, path: str, readers: int) -> Status:
        feed = self.handles.feed(node)
        if feed is not None and feed.error is not None:
            state = "error"
        elif readers:
            state = "streaming"
        else:
            state = "idle"
        status = Status(
            path=path, url=node.file.shown, state=state, readers=readers,
            error=None if feed is None or feed.error is None else redact_text(str(feed.error)),
            variant=feed.variant if feed is not None else node.file.variant,
            live=node.file.live,
        )  # fmt: skip
        fields = dict(node.file.status_fields())
        if status.error is not None or fields.get("error") is None:
            fields.pop("error", None)
        else:
            fields["error"] = redact_text(str(fields["error"]))
        return status.replace(**fields)

    def failed_listing(self, folder: ListingNode) -> Status:
        """A listing whose load failed: one line saying why."""
        return Status(
            path="/".join(self.tree.path_of(folder)),
            url=folder.listing.shown if folder.listing else None,
            state="error", error=redact_text(folder.error or "") or None,
        )  # fmt: skip

    def mount(self) -> dict[str, Any]:
        nodes: list[FileNode | PipeNode] = [*self.tree.files(), *self.tree.pipes()]
        streams = [self.of(node) for node in sorted(nodes, key=self.tree.path_of)]
        streams += [self.failed_listing(f) for f in self.tree.listings() if f.error is not None]
        states = [s.state for s in streams]
        summary = f"{len(streams)} streams, {states.count('downloading')} downloading"
        if states.count("error"):
            summary += f", {states.count('error')} error"
        return {
            "pid": os.getpid(),
            "mountpoint": self.mountpoint,
            "config": self.tree.settings.source,
            "started": round(self.started),
            "summary": summary,
            "streams": [s.as_dict() for s in streams],
        }

    def json(self) -> bytes:
        return (json.dumps(self.mount(), indent=2) + "\n").encode()
