"""HLS resources on the wire: AES-128 keys, exact decrypted sizes, and decrypted bytes.

Owns the keys (fetched over http(s) only, 16 bytes exactly, kept in memory for the life of
the mount and never logged or written anywhere), learning a segment's size without its
body — its byte range, a one-byte ranged GET, or for an encrypted segment one suffix GET of
its last two cipher blocks, whose decryption gives the PKCS#7 padding and so the exact
plaintext size — and streaming a segment's plaintext from any offset, decrypting from the
enclosing cipher block with the block before it as IV.

It must never decide which segment to fetch or where bytes go, and never hand out bytes of
an encrypted segment whose padding did not check out: a wrong key is an error, not noise.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator

import trio

from ...errors import OriginError, PlaylistError
from ...net import Backoff, Fetched, HttpClient
from ...redact import redact_url
from .playlist import AES_BLOCK, MAX_KEY_BYTES, MAX_PLAYLIST_BYTES, MAX_SEGMENT_BYTES, Resource

# A segment read whole into memory (live and `auto` feeds) may be at most this large: a
# minute of 320 kbit/s audio is 2.4 MB, so 64 MiB leaves room for video and stops a hostile
# playlist from pulling a gigabyte into RAM.
MAX_WHOLE_SEGMENT = 64 * 1024 * 1024
# Size probes run this many at a time: enough to learn a programme's sizes in a few round
# trips, few enough to stay polite to one origin (browsers allow 6 per host over HTTP/1.1).
PROBE_CONCURRENCY = 32


class SegmentFetcher:
    """Keys, sizes and plaintext bytes of HLS resources, shared by a mount's programmes."""

    def __init__(self, http: HttpClient) -> None:
        self.http = http
        self._keys: dict[str, bytes] = {}
        self._key_locks: dict[str, trio.Lock] = {}
        self.probes = trio.CapacityLimiter(PROBE_CONCURRENCY)

    async def playlist(self, url: str) -> Fetched:
        """A playlist's text (size-capped), and the URL it came from after redirects."""
        return await self.http.fetch(url, MAX_PLAYLIST_BYTES)

    async def key(self, uri: str) -> bytes:
        """The 16-byte AES key at ``uri``, fetched once per mount."""
        lock = self._key_locks.setdefault(uri, trio.Lock())
        async with lock:
            key = self._keys.get(uri)
            if key is None:
                shown = redact_url(uri)
                try:
                    fetched = await self.http.fetch(uri, MAX_KEY_BYTES)
                except OriginError as exc:
                    raise PlaylistError(shown, f"key not available: {exc.reason}") from None
                if len(fetched.data) != AES_BLOCK:
                    raise PlaylistError(shown, f"key is {len(fetched.data)} bytes, not 16")
                key = self._keys[uri] = fetched.data
            return key

    async def plain_size(self, resource: Resource) -> int:
        """The exact number of plaintext bytes ``resource`` holds, without its body."""
        shown = redact_url(resource.uri)
        async with self.probes:
            if resource.key is None:
                if resource.byterange is not None:
                    return resource.byterange.length
                length = (await self.http.probe(resource.uri)).length
                if length is None:
                    raise OriginError(shown, "origin does not report the segment's length")
                return _bounded(length, shown)
            # Encrypted: the last block's padding says how many plaintext bytes there are;
            # decrypting it needs the block before it (or the IV for a one-block segment).
            if resource.byterange is not None:
                total = resource.byterange.length
                count = min(2 * AES_BLOCK, total)
                end = resource.byterange.offset + total
                tail = await self._range(resource.uri, end - count, end)
            else:
                total, tail = await self.http.tail(
                    resource.uri, 2 * AES_BLOCK, MAX_SEGMENT_BYTES
                )
            total = _bounded(total, shown)
            if total == 0 or total % AES_BLOCK or len(tail) < AES_BLOCK:
                raise PlaylistError(shown, f"encrypted segment of {total} bytes is not whole "
                                    "AES blocks")  # fmt: skip
            assert resource.key is not None
            key = await self.key(resource.key.uri)
        iv = tail[-2 * AES_BLOCK : -AES_BLOCK] if len(tail) >= 2 * AES_BLOCK else resource.iv
        last = _decrypt(key, iv, tail[-AES_BLOCK:])
        return total - _padding(last, shown)

    async def read(self, resource: Resource, start: int, size: int) -> AsyncGenerator[bytes]:
        """Plaintext bytes ``[start, size)`` of ``resource`` (``size`` from :meth:`plain_size`).

        Unencrypted bytes stream as they arrive; an encrypted remainder is decrypted whole and
        handed out only once its padding checked out.

        Raises:
            OriginError: transient (retry from the first byte not received) or permanent.
            PlaylistError: the key cannot be had, or the padding is wrong.
        """
        base = resource.byterange.offset if resource.byterange is not None else 0
        shown = redact_url(resource.uri)
        whole = None if resource.byterange is not None else size
        if resource.key is None:
            # Without a byte range the resource is the segment: its length must still be the
            # one measured, or its bytes belong to another version than the cached ones.
            async for chunk in self._stream(resource.uri, base + start, base + size, whole):
                yield chunk
            return
        key = await self.key(resource.key.uri)
        block = start // AES_BLOCK * AES_BLOCK
        # Any cipher block decrypts given the one before it, so a seek into an encrypted
        # segment fetches from there, not from the segment's start.
        first = base + block - (AES_BLOCK if block else 0)
        cipher_size = _cipher_size(size)
        if resource.byterange is not None:
            cipher_size = resource.byterange.length
        cipher_end = base + cipher_size
        if cipher_end - first > MAX_WHOLE_SEGMENT:
            # The remainder is decrypted in memory once whole (its padding must check out
            # before any byte is handed out), so it is bounded like a live segment.
            raise PlaylistError(shown, "encrypted segment larger than 64 MiB")
        expected = None if resource.byterange is not None else cipher_size
        data = await self._range(resource.uri, first, cipher_end, expected)
        iv, cipher = (data[:AES_BLOCK], data[AES_BLOCK:]) if block else (resource.iv, data)
        if len(cipher) % AES_BLOCK:
            raise PlaylistError(shown, "encrypted segment is not whole AES blocks")
        plain = _decrypt(key, iv, cipher)
        # The padding must be exactly what the measured size left: any valid-looking pad of
        # another length means other bytes (a new version, a rotated key) than measured.
        if _padding(plain[-AES_BLOCK:], shown) != cipher_size - size:
            raise PlaylistError(shown, "encrypted segment changed since its size was measured")
        yield plain[start - block : size - block]

    async def whole(self, resource: Resource) -> bytes:
        """All plaintext of ``resource`` (a segment of a live or `auto` feed), with retries.

        Raises:
            OriginError: permanent failure, or transient ones after the retries.
            PlaylistError: the key cannot be had, or the padding is wrong.
        """
        backoff = Backoff(self.http.policy)
        while True:
            try:
                return await self._whole(resource)
            except OriginError as exc:
                if not exc.retryable:
                    raise
                await backoff.pause(exc)

    async def _whole(self, resource: Resource) -> bytes:
        shown = redact_url(resource.uri)
        if resource.byterange is not None:
            if resource.byterange.length > MAX_WHOLE_SEGMENT:
                raise PlaylistError(shown, "live segment larger than 64 MiB")
            first = resource.byterange.offset
            data = await self._range(resource.uri, first, first + resource.byterange.length)
        else:
            received = bytearray()
            async with self.http.open_range(resource.uri, 0) as body:
                async for chunk in body.chunks():
                    received += chunk
                    if len(received) > MAX_WHOLE_SEGMENT:
                        raise PlaylistError(shown, "live segment larger than 64 MiB")
                length = body.info.length
            if length is not None and len(received) < length:
                raise OriginError(shown, f"body ended at byte {len(received)}, before {length}",
                                  transient=True)  # fmt: skip
            data = bytes(received)
        if resource.key is None:
            return bytes(data)
        key = await self.key(resource.key.uri)
        if not data or len(data) % AES_BLOCK:
            raise PlaylistError(shown, "encrypted segment is not whole AES blocks")
        plain = _decrypt(key, resource.iv, bytes(data))
        return plain[: len(plain) - _padding(plain[-AES_BLOCK:], shown)]

    async def _stream(
        self, uri: str, first: int, end: int, whole: int | None = None
    ) -> AsyncIterator[bytes]:
        """Bytes ``[first, end)`` of ``uri`` as they arrive (skipping any the origin resends).

        With ``whole``, the resource must be exactly that long (as measured).
        """
        async with self.http.open_range(uri, first, end - 1) as body:
            total = body.info.length
            if whole is not None and total is not None and total != whole:
                raise PlaylistError(redact_url(uri), f"segment is now {total} bytes, not the "
                                    f"{whole} measured: it changed on the origin")  # fmt: skip
            if total is not None and end > total:
                # A byte range the playlist declares past the resource's end: the bytes it
                # promises do not exist, and no retry will make them.
                raise PlaylistError(redact_url(uri), f"byte range ends at {end}, past the end "
                                    f"of the resource ({total} bytes)")  # fmt: skip
            skip = first - body.start
            position = first
            async for chunk in body.chunks():
                if skip:
                    cut = min(skip, len(chunk))
                    chunk, skip = chunk[cut:], skip - cut
                chunk = chunk[: end - position]
                if chunk:
                    position += len(chunk)
                    yield chunk
                if position >= end:
                    return
            if position < end:
                raise OriginError(redact_url(uri), f"body ended at byte {position}, before {end}",
                                  transient=True)  # fmt: skip

    async def _range(self, uri: str, first: int, end: int, whole: int | None = None) -> bytes:
        data = bytearray()
        async for chunk in self._stream(uri, first, end, whole):
            data += chunk
        return bytes(data)


def _bounded(size: int, shown: str) -> int:
    if size > MAX_SEGMENT_BYTES:
        raise PlaylistError(shown, f"segment of {size} bytes is larger than 1 GiB")
    return size


def _cipher_size(plain_size: int) -> int:
    """PKCS#7 always pads, so the cipher text is the next whole block above the plaintext."""
    return (plain_size // AES_BLOCK + 1) * AES_BLOCK


def _decrypt(key: bytes, iv: bytes, cipher: bytes) -> bytes:
    # Imported on first use: most programmes are not encrypted, and a mount starts sooner.
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    decryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
    return decryptor.update(cipher) + decryptor.finalize()


def _padding(last_block: bytes, shown: str) -> int:
    """The PKCS#7 pad length of the final plaintext block; a bad pad means a wrong key or IV."""
    pad = last_block[-1] if last_block else 0
    if not 1 <= pad <= AES_BLOCK or last_block[-pad:] != bytes([pad]) * pad:
        raise PlaylistError(shown, "AES-128 padding check failed (wrong key or IV?)")
    return pad
