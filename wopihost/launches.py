"""Launch links: what opens the host page for one user, one file and one action.

A launch link is `{public url}/host/{action}/{ticket}`: a ticket (tokens.py) bound to an access token for the
file. Opening it gives back a token derived from that one (same jti, user, rights and expiry), which the host
page hands to the WOPI client: revoking the token revokes the link and every client session it opened, and a
link never grants more than its token. The action is not signed: the token's rights are what bound a link
(a read-only token opens no edit), and its holder could switch actions in the client anyway. Without a valid
ticket nothing is said about the file, not even whether it exists.

Links come from three places: `wopihost open` and the launch API (a new token, a short-lived link), and
CheckFileInfo's HostViewUrl / HostEditUrl (the caller's own token, a link that lives as long as it).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from .clock import Clock
from .db import Database
from .drives import Drives
from .errors import WopiError, unauthorized
from .ids import is_id
from .models import File, Folder
from .prepared import Statements
from .tokens import LAUNCH, Grant, Tokens
from .users import ensure_user

PATH = "/host"  # below the public URL: {public_url}/host/{action}/{ticket}
ACTIONS = ("view", "edit", "editnew")
WRITING_ACTIONS = ("edit", "editnew")
INVALID = "this link is not valid or has expired"  # one answer for every refusal: it reveals nothing


@dataclass(frozen=True)
class Launch:
    """What a valid launch link opens."""

    action: str
    file_id: str
    file_name: str
    user_id: str
    token: str  # the access token the WOPI client gets
    token_expires_at: datetime
    grant: Grant = field(repr=False)  # what `token` was derived from


@dataclass(frozen=True)
class LaunchLink:
    action: str
    file_id: str
    ticket: str
    expires_at: datetime  # of the link; the token it opens lives longer


class LaunchLinks:
    def __init__(self, db: Database, tokens: Tokens, drives: Drives, clock: Clock):
        self.db, self.tokens, self.drives, self.clock = db, tokens, drives, clock
        # A client calls CheckFileInfo again and again with one token, and a link that lives as long as its
        # token is the same string each time: signed once, not on every call.
        self._grant_tickets = functools.lru_cache(maxsize=1024)(self._grant_ticket)

    def issue(
        self,
        file_id: str,
        user_id: str,
        action: str,
        *,
        can_write: bool,
        ttl: timedelta,
        token_ttl: timedelta,
        under: Grant | None = None,
    ) -> LaunchLink:
        """A link for `user_id` to open `file_id` on `action`, valid for `ttl`, with a new access token valid for
        `token_ttl` once opened. `under`: the API token of the launch API's caller, who must reach the file's
        drive and whose token's revocation revokes the link's (`wopihost open` is the administrator).
        WopiError 400/403/404 if not allowed, 401 if `under` was revoked meanwhile."""
        if action not in ACTIONS:
            raise WopiError(400, f"the host page's actions are {', '.join(ACTIONS)}, not {action!r}")
        if action in WRITING_ACTIONS and not can_write:
            raise WopiError(403, f"a read-only link cannot {action}: ask for view")
        now = self.clock.now()
        with self.db.write() as s:
            file = s.get(File, file_id) if is_id(file_id) else None  # PostgreSQL refuses a NUL in a key
            if file is None:
                raise WopiError(404, "no such file", code="itemNotFound")
            if under is not None:
                self.drives.reachable(s, user_id, s.get_one(Folder, file.folder_id).drive_id)
                # asked again where the link's token is made, the last lock taken: a revocation of `under` then
                # either lands first (401) or waits for this token's row and revokes it too (Tokens.revoke)
                with Statements.in_session(s) as t:
                    self.tokens.require_live(t, under)
            else:
                ensure_user(s, user_id, now)
            rights, parent = "w" if can_write else "r", under.jti if under is not None else None
            issued = self.tokens.issue(s, file_id, user_id, rights, now + token_ttl, parent=parent)
        ticket = self.tokens.ticket(issued.grant, file_id, ttl, LAUNCH)
        return LaunchLink(action, file_id, ticket, min(issued.grant.expires_at, now + ttl).replace(microsecond=0))

    def for_grant(self, grant: Grant, file_id: str) -> str:
        """The ticket of links that open `file_id` with the caller's own token, as long as that token lives
        (CheckFileInfo's HostViewUrl and HostEditUrl)."""
        return self._grant_tickets(grant, file_id)

    def _grant_ticket(self, grant: Grant, file_id: str) -> str:
        return self.tokens.ticket(grant, file_id, grant.expires_at - self.clock.now(), LAUNCH)

    def open(self, action: str, ticket: str) -> Launch:
        """What the link opens; WopiError 401 (always saying INVALID) if it is not valid, or no longer."""
        if action not in ACTIONS:
            raise WopiError(404, "no such page")
        with self.db.read() as s:
            try:
                file_id, row, can_write = self.tokens.open_ticket(s, ticket, LAUNCH)
            except WopiError:
                raise unauthorized(INVALID) from None
            file = s.get(File, file_id)
            if file is None or (action in WRITING_ACTIONS and not can_write):
                raise unauthorized(INVALID)
            rights = "w" if can_write else "r"  # the link's token's, which may be less than its row's
            grant = Grant(row.jti, file_id, row.user_id, rights, row.expires_at)
            name = file.name
        token = self.tokens.derive(grant, file_id, rights, "")
        return Launch(action, file_id, name, row.user_id, token.token, grant.expires_at, grant)

    def read_only(self, launch: Launch) -> Launch:
        """`launch` with a read-only token: for a view that the client offers only through its edit action, which
        then opens the file read-only instead of in its editor."""
        return replace(launch, token=self.tokens.derive(launch.grant, launch.file_id, "r", "").token)
