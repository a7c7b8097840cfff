"""Checking the proof signature of each WOPI request against the WOPI client's discovery keys.

Modes (WOPIHOST_PROOF_KEYS): `off` checks nothing; `verify` (the default once a
discovery is configured) demands a valid signature whenever the discovery publishes
proof keys; `require` demands one always. A request that fails gets 500, as WOPI
prescribes, or 400 for a PutChunkedFile that names X-WOPI-Editors (docs/cspp-plus.md §1.3).
Keys rotate: when a signature does not verify, or verifies only with the old key,
the discovery is fetched again (at most once a minute per process) before deciding.
"""

from __future__ import annotations

import logging

from .clock import Clock
from .config import Settings
from .discovery import DiscoveryCache, DiscoveryError
from .errors import WopiError
from .proof import ProofKeys, raw_query_value, verify
from .requesturl import called_url

log = logging.getLogger("wopihost.proof")
REFETCH_AT_MOST_EVERY = 60.0
PROOF_FAILED = "wopihost.proof_failed"  # environ key: this request was refused for its proof (counted by metrics.py)


class ProofCheck:
    def __init__(self, settings: Settings, clock: Clock, discovery: DiscoveryCache | None):
        self.settings, self.clock, self.discovery = settings, clock, discovery

    def check(self, environ, headers, editors_named: bool = False) -> None:
        """Raise WopiError unless the request's proof headers satisfy the configured mode."""
        mode = self.settings.proof_keys
        if mode == "off":
            return
        keys = self._keys()
        if keys is None:
            if mode == "require":
                self._fail(
                    environ,
                    "no proof keys are known: the WOPI client's discovery is unavailable or has none",
                    editors_named,
                )
            return
        url = called_url(environ, self.settings.public_url, self.settings.trusted_proxies)
        token = raw_query_value(environ.get("QUERY_STRING", ""), "access_token")
        if token is None:
            scheme, _, credentials = (headers.get("Authorization") or "").partition(" ")
            token = credentials.strip() if scheme.lower() == "bearer" else None

        def attempt(proof_keys: ProofKeys):
            return verify(
                proof_keys,
                access_token_raw=token,
                url=url,
                timestamp_header=headers.get("X-WOPI-TimeStamp"),
                proof=headers.get("X-WOPI-Proof"),
                proof_old=headers.get("X-WOPI-ProofOld"),
                now=self.clock.now(),
            )

        verdict = attempt(keys)
        if verdict.refresh_discovery:  # the client may have rotated its keys
            fresh = self._refetch()
            if not verdict and fresh is not None and not fresh.same_as(keys):
                verdict = attempt(fresh)
        if not verdict:
            log.warning(
                "proof check failed for %s %s: %s",
                environ.get("REQUEST_METHOD"),
                environ.get("PATH_INFO"),
                verdict.reason,
            )
            self._fail(environ, verdict.reason, editors_named)

    def _keys(self) -> ProofKeys | None:
        if self.discovery is None:
            return None
        try:
            return self.discovery.get().proof_keys
        except DiscoveryError as exc:
            log.warning("no discovery to check proofs with: %s", exc)
            return None

    def _refetch(self) -> ProofKeys | None:
        assert self.discovery is not None  # asked only once _keys found keys there
        try:
            return self.discovery.refresh_if_older_than(REFETCH_AT_MOST_EVERY).proof_keys
        except DiscoveryError:
            return None

    @staticmethod
    def _fail(environ, reason: str, editors_named: bool) -> None:
        environ[PROOF_FAILED] = True
        status = 400 if editors_named else 500
        raise WopiError(status, f"proof check failed: {reason}", {"X-WOPI-ServerError": "proof check failed"})


def discovery_cache(settings: Settings, clock: Clock) -> DiscoveryCache | None:
    if not settings.discovery_url:
        return None
    return DiscoveryCache(settings.discovery_url, ttl_seconds=settings.discovery_ttl, clock=clock)
