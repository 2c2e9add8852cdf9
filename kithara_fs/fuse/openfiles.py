"""The adapter's open files: what each file handle the kernel holds stands for.

Owns :class:`OpenFile` (a stream file's handle: its stream, whether its reader is
O_NONBLOCK as its descriptor says now, and the poll handle to wake) and
:class:`VirtualHandle` (a generated file's snapshot). It must never read or fetch bytes.
"""

from __future__ import annotations

from typing import Any

from ..engine.stream import Handle
from ..procfd import OpenerDescriptor
from ..tree.nodes import StreamNode


class VirtualHandle:
    """An open generated file: the snapshot rendered at open, so reads are consistent."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


class OpenFile:
    """One open file: its stream, and the poll handle to wake (kernel gives a new one per poll).

    ``nonblocking`` starts as the flags at open and follows the opener's descriptor as
    ``descriptor`` finds it at each read that would have to wait.
    """

    __slots__ = ("node", "stream", "nonblocking", "descriptor", "poll_handle", "watching")

    def __init__(
        self, node: StreamNode, stream: Handle, nonblocking: bool, descriptor: OpenerDescriptor
    ) -> None:
        self.node = node
        self.stream = stream
        self.nonblocking = nonblocking
        self.descriptor = descriptor
        self.poll_handle: Any = None
        self.watching = False

    def nonblocking_now(self) -> bool:
        """Whether the reader wants EAGAIN instead of a wait, as its descriptor says now."""
        current = self.descriptor.nonblocking()
        if current is not None:
            self.nonblocking = current
        return self.nonblocking

    def wake_poller(self) -> None:
        self.watching = False
        poll_handle, self.poll_handle = self.poll_handle, None
        if poll_handle is not None:
            poll_handle.notify()
