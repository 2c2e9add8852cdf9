"""What a progressive source does when its origin answers each request with another version.

Podcast hosts insert ads per request (dynamic ad insertion): one URL, other bytes and another
length on another request (RADIO-PODCASTS.md: AntennaPod#7409, pocket-casts-android#157).
This module owns the decisions for such a source (``ByteSource.versions_vary``), the policy
the README states:

- Requests go where the redirects led for the version being read, resolved once per version
  (by the size probe, or the download that took it); a permanent failure there (an expired
  signed address) goes through the feed's URL again, once.
- An answer of another version while bytes of the cached one are stored: that version is
  asked for again, with backoff (a blocking reader waits), until the retries are spent;
  then the new one is taken, and handles that read the old one get ESTALE.
- An answer of another version while nothing is stored (and no other download is bringing
  the cached one whole): asked again once
  (:data:`ASK_BEFORE_TAKING`: a host rotating a few cuts, or keeping one at the resolved
  address, gives back the one whose size was shown), then taken, and downloaded whole from
  byte 0 on that one request; handles that were served nothing follow it. A text or HTML
  answer (an error page under a 200) is never taken.

It must never store bytes or touch the cache entry: the source acts on its answers.
"""

from __future__ import annotations

import logging

from ..errors import OriginError, RemoteChangedError
from ..net import Backoff, Body

log = logging.getLogger(__name__)

# Answers of another version asked again, while nothing is stored, before one is taken.
ASK_BEFORE_TAKING = 1


class VaryingVersions:
    """One source's dealings with an origin whose versions vary.

    Attributes:
        spooling: downloads of a version downloaded whole that are running now.
    """

    def __init__(self, shown: str) -> None:
        self.shown = shown
        self.spooling = 0
        self._resolved: str | None = None
        self._bypass = False
        # Answers of another version met while nothing was stored, since one was taken.
        self._misses = 0

    def where(self, url: str) -> str:
        """Where the next request for ``url`` goes (may carry credentials: never log it)."""
        return (self._resolved if not self._bypass else None) or url

    def resolved(self, final: str) -> None:
        """The current version's answers come from ``final`` (after redirects)."""
        self._resolved, self._bypass = final, False

    def forget(self) -> None:
        """A new version: its address is resolved anew."""
        self._resolved, self._bypass = None, False

    def through_feed_url(self, exc: OriginError) -> bool:
        """True if ``exc`` (a permanent failure at the resolved address, which may have
        expired) is worth one more request through the original URL."""
        if self._resolved is None or self._bypass or exc.transient:
            return False
        self._bypass = True
        return True

    def take(self, body: Body, stored: bool) -> bool:
        """Whether ``body``'s version is taken now (False: it is the cached version).

        Raises:
            RemoteChangedError: another version, to be asked again for the cached one.
        """
        # Led elsewhere than before (two downloads that started together, an expired
        # address): another version, whatever its validators say.
        elsewhere = self._resolved is not None and body.final_url != self._resolved
        if not (body.other_version or elsewhere):
            self._resolved, self._misses = body.final_url, 0
            return False
        kind = (body.info.content_type or "").lower()
        if kind.startswith("text/") or "html" in kind:
            # A CDN's error page under a 200 and new validators is not a cut of the episode.
            raise RemoteChangedError(self.shown, f"a {kind.split(';')[0]} page answered")
        if stored or self._misses < ASK_BEFORE_TAKING:
            self._misses += not stored
            raise RemoteChangedError(self.shown, "the redirects led to another file than "
                                     "before" if elsewhere else "another version answered")
        log.info("%s: another version answered before any byte was stored; taking it, "
                 "whole from the start", self.shown)  # fmt: skip
        self._misses = 0
        return True

    async def ask_again(self, exc: RemoteChangedError, backoff: Backoff) -> bool:
        """Wait and ask again for the cached version: True to try again; False once the
        retries are spent (the new version is then taken, as for a republished file)."""
        try:
            await backoff.pause(exc)
        except RemoteChangedError:
            log.warning("%s: the origin keeps sending another version; taking it", self.shown)
            return False
        log.info("%s: another version answered (%s); asking again for the one being read",
                 self.shown, exc.reason)  # fmt: skip
        return True
