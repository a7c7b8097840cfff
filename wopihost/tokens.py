"""Access tokens: signed, bound to one resource, one user and a set of rights, expiring, revocable.

The resource a token is bound to is one of:

* a file (its id): a WOPI access token for that file, rights "r" or "w";
* a container (`c-<folder id>`) or the user's ecosystem (`e-`): WOPI tokens that the host hands out
  inside responses (EnumerateAncestors, EnumerateChildren, CreateChildContainer ...), with rights
  from FOLDER_RIGHTS: l(ist the children), c(reate children), m(anage: rename, delete), w(rite the
  files in it); reading the container's own description needs none;
* nothing (`""`): an API token (Graph's `Authorization: Bearer`), rights "r" or "w", reaching the
  drives its user may reach.

Each is refused where another is expected: a container token cannot read a file's content. Besides
its rights a token has a `reach`: the FOLDER_RIGHTS that the containers above it get when a response
hands out tokens for them (docs/wopi.md §4.2 has the rules, in `derive`'s callers). A token handed
out inside a response is *derived* from the calling token: same jti, same user, same expiry, rights
never wider than the caller's; it needs no row, and revoking the calling token revokes it too. Revoking a
file's tokens (`revoke(file_id=...)`) also records the revocation (models.FileRevocation), so that the tokens
handed out for that file from another's row (a container's, a sibling's) are refused on it as well: the
token's row says when it was issued, and a revocation of its file that came later refuses it there
(`revoked_on`).

Wire form: base32 (lower case, no padding) of an itsdangerous-signed payload
`<jti>:<resource>:<rights>[.<reach>]:<expiry seconds>`. Base32 keeps the token to [a-z2-7]:
WOPI clients sign the URL that carries the token, and only an alphanumeric token
looks the same percent-encoded and decoded (docs/wopi.md §6.2). About 150
characters, well inside Office's URL limits.

The signature lets us reject forged or foreign tokens without a database hit;
the `access_tokens` row (keyed by jti) carries the user and makes revocation work.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import cast

import itsdangerous
import sqlalchemy as sa
from sqlalchemy.orm import Session

from .clock import Clock
from .errors import unauthorized
from .ids import is_id, new_id
from .models import AccessToken, File, FileRevocation, Folder
from .prepared import Prepared, Statements
from .repository import insert_if_absent, locking

JTI_LENGTH = 16
API = ""  # the resource of an API token
ECOSYSTEM = "e-"
FOLDER_RIGHTS = "lcmw"
DOWNLOAD_TTL = timedelta(hours=1)
GRAPH_DOWNLOAD, FILE_URL, LAUNCH, COPY_MONITOR = "download", "file-url", "launch", "copy-monitor"  # kinds of ticket
_TICKET_NOUNS = {
    GRAPH_DOWNLOAD: "download URL",
    FILE_URL: "download URL",
    LAUNCH: "launch link",
    COPY_MONITOR: "monitor URL",
}
_FILE_RIGHTS = ("r", "w")


def bearer(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header (the scheme in any case), None without one."""
    scheme, _, token = (authorization or "").partition(" ")
    return (token.strip() or None) if scheme.lower() == "bearer" else None


def container(folder_id: str) -> str:
    """The resource of a token for the container (folder) `folder_id`."""
    return "c-" + folder_id


def folder_rights(letters: str) -> str:
    """`letters` as FOLDER_RIGHTS spells them (each once, in order); ValueError for any other letter."""
    if set(letters) - set(FOLDER_RIGHTS):
        raise ValueError(f"folder rights are letters of {FOLDER_RIGHTS!r}, not {letters!r}")
    return "".join(ch for ch in FOLDER_RIGHTS if ch in letters)


@dataclass(frozen=True)
class Grant:
    """What a verified token allows."""

    jti: str
    resource: str
    user_id: str
    rights: str
    expires_at: datetime
    reach: str = ""

    @property
    def can_write(self) -> bool:
        return "w" in self.rights

    def may(self, right: str) -> bool:
        return right in self.rights


@dataclass(frozen=True)
class IssuedToken:
    token: str
    grant: Grant


class Tokens:
    def __init__(self, secret: str, clock: Clock):
        self._signer = itsdangerous.Signer(secret, salt="wopihost.access-token", digest_method=hashlib.sha256)
        # one signer per kind of ticket, so that one kind is never taken for another
        self._tickets = {
            kind: itsdangerous.Signer(secret, salt=f"wopihost.{kind}", digest_method=hashlib.sha256)
            for kind in _TICKET_NOUNS
        }
        self._clock = clock
        # A client sends the same token with every request of its session: what its signature says is kept,
        # so each request after the first skips the decoding and the HMAC. Expiry, resource and revocation
        # are still checked every time; a forged token is never kept (it raises).
        self._payloads = functools.lru_cache(maxsize=1024)(self._open)

    def issue(
        self,
        session: Session,
        resource: str,
        user_id: str,
        rights: str,
        expires_at: datetime,
        reach: str = "",
        parent: str | None = None,
    ) -> IssuedToken:
        """A new token, with the row that lets it be revoked; with the token whose jti is `parent` too."""
        grant = Grant(
            new_id(JTI_LENGTH),
            resource,
            user_id,
            _checked(resource, rights),
            expires_at.replace(microsecond=0),
            folder_rights(reach),
        )  # the token carries whole seconds
        session.add(
            AccessToken(
                jti=grant.jti,
                file_id=resource,
                user_id=user_id,
                can_write=grant.can_write,
                expires_at=grant.expires_at,
                created_at=self._clock.now(),
                parent_jti=parent,
            )
        )
        return self._sign(grant)

    def derive(self, caller: Grant, resource: str, rights: str, reach: str) -> IssuedToken:
        """A token for `resource` handed out in a response to `caller`: its jti, user and expiry."""
        return self._sign(
            Grant(
                caller.jti,
                resource,
                caller.user_id,
                _checked(resource, rights),
                caller.expires_at,
                folder_rights(reach),
            )
        )

    def _sign(self, grant: Grant) -> IssuedToken:
        perm = grant.rights + (f".{grant.reach}" if grant.reach else "")
        payload = f"{grant.jti}:{grant.resource}:{perm}:{_epoch(grant.expires_at)}"
        return IssuedToken(_encode(self._signer.sign(payload.encode("ascii"))), grant)

    def verify(self, session: Session, token: str | None, resource: str) -> Grant:
        """The grant of a token used on `resource`; WopiError 401 if it is not valid for it."""
        claim = self.claim(token, resource)
        row = session.execute(_ROW_ON, {"jti": claim.jti, "resource": resource}).first()
        return self.grant(claim, row[0] if row else None, row[1] if row else None)

    def claim(self, token: str | None, resource: str) -> Grant:
        """What the token itself says, checked (signature, resource, expiry) without the database: a grant
        whose `user_id` is still unknown (""); `grant` completes it from the token's row."""
        if not token:
            raise unauthorized("no access token")
        try:
            jti, token_resource, perm, expiry = self._payloads(token)
            expires_at = _EPOCH + timedelta(seconds=int(expiry))
            rights, _, reach = perm.partition(".")
        except _MALFORMED:
            raise unauthorized("the access token is not valid") from None
        if token_resource != resource:
            raise unauthorized(
                f"this is {_kind(token_resource)}, not {_kind(resource)}"
                if _kind(token_resource) != _kind(resource)
                else f"the access token is not for this {_kind(resource).split()[-1]}"
            )
        if expires_at <= self._clock.now():
            raise unauthorized("the access token has expired")
        return Grant(jti, resource, "", rights, expires_at, reach)

    @staticmethod
    def grant(claim: Grant, user_id: str | None, revoked_at: datetime | None) -> Grant:
        """The claim's grant, given its token's row (`user_id` None: there is none); 401 if revoked."""
        if user_id is None or revoked_at is not None:
            raise unauthorized("the access token has been revoked")
        return Grant(claim.jti, claim.resource, user_id, claim.rights, claim.expires_at, claim.reach)

    def require_live(self, t: Statements, grant: Grant) -> None:
        """401 unless `grant`'s token is still live, asked again in the write transaction of a change that comes
        long after `verify` (a body streamed in meanwhile): not expired, its row not revoked. One primary-key
        read, which on PostgreSQL holds the row until the commit (FOR SHARE): `revoke`, an UPDATE of it, waits
        for the change to land, or the change waits for the revocation and reads it. SQLite's writers take
        turns anyway. Ask it once the change holds every row lock it needs (its folder's, its file's): it then
        waits for nothing more while it holds the token, so a revocation that holds other rows as it waits for
        this one (a member's removal holds the membership: drives.py) waits in no circle."""
        if grant.expires_at <= self._clock.now():
            raise unauthorized("the access token has expired")
        row = t.first(_REVOKED_AT, {"jti": grant.jti, "resource": grant.resource})
        if row is None or row[0] is not None:
            raise unauthorized("the access token has been revoked")

    def opens(self, session: Session, jti: str, file_id: str) -> bool:
        """Whether token `jti` may still be used on file `file_id` (a file other than its own, which it reaches
        through its folder or as its holder's, or a ticket's): not revoked, nor the file revoked for its user
        since it was issued, as a token handed out for that file would be refused (`verify`)."""
        row = session.execute(_ROW_ON, {"jti": jti, "resource": file_id}).first()
        return row is not None and row[1] is None

    def ticket(self, grant: Grant, file_id: str, ttl: timedelta = DOWNLOAD_TTL, kind: str = GRAPH_DOWNLOAD) -> str:
        """A short-lived credential for one file (`kind`: its content as Graph's @microsoft.graph.downloadUrl or
        WOPI's FileUrl, a launch link of the host page, or the monitor URL of the Graph copy that made it), bound
        to the token it was issued under, so revoking that token revokes it too. It expires with that token, or
        `ttl` from now if sooner. It carries whether the grant may write: a token's row says what it was issued
        with, and a token derived from it (a container's child, say) may have less."""
        expiry = min(_epoch(grant.expires_at), _epoch(self._clock.now() + ttl))
        rights = "w" if grant.can_write else "r"
        # Not base32 like a token: nobody proof-signs these URLs, and base64url is encoded in C (a FileUrl
        # is made for every CheckFileInfo).
        return self._tickets[kind].sign(f"{grant.jti}.{file_id}.{rights}.{expiry}".encode("ascii")).decode("ascii")

    def open_ticket(self, session: Session, ticket: str, kind: str = GRAPH_DOWNLOAD) -> tuple[str, AccessToken, bool]:
        """The file id a ticket of `kind` is for, the row of the token it was issued under (whose user's
        access to the file the caller checks again) and whether it may write; WopiError 401 if it is not
        valid (any more)."""
        try:
            signed = ticket.encode("ascii")
            payload = signed.rpartition(b".")[0]
            # Signed again and compared whole, not unsigned: base64 would also take padding and other low bits
            # in the last character, and a ticket must have one spelling.
            if not hmac.compare_digest(self._tickets[kind].sign(payload), signed):
                raise itsdangerous.BadSignature("not a ticket we issued")
            jti, file_id, rights, expiry = payload.decode("ascii").split(".")
            expires_at = _EPOCH + timedelta(seconds=int(expiry))
        except _MALFORMED:
            raise unauthorized(f"the {_TICKET_NOUNS[kind]} is not valid") from None
        row = session.get(AccessToken, jti)
        if (
            expires_at <= self._clock.now()
            or row is None
            or row.revoked_at is not None
            # a WOPI ticket goes with its file's tokens; Graph's are an API token's, which no file revocation names
            or (kind in _WOPI_TICKETS and not self.opens(session, jti, file_id))
        ):
            raise unauthorized(f"the {_TICKET_NOUNS[kind]} has expired or its token has been revoked")
        # the rights the ticket was signed with: its grant's, which may be more than its row's (a file its
        # holder created through a read-only token's folder rights is theirs to write: docs/wopi.md §4.2)
        return file_id, row, rights == "w"

    def revoke(
        self,
        session: Session,
        *,
        token: str | None = None,
        file_id: str | None = None,
        user_id: str | None = None,
        drive_id: str | None = None,
    ) -> int:
        """Revoke one token (and those issued under it), or every token for a file, a user and/or the files and
        containers of a drive (not API tokens: they name no drive). Returns how many rows were revoked. Every
        token for a file (of a user) goes on it, those handed out for it from other tokens too, which need no
        row to be revoked: none that was issued up to now opens it any more."""
        now = self._clock.now()
        query = sa.update(AccessToken).where(AccessToken.revoked_at.is_(None))
        if token is not None:
            try:
                jti = self._open(token)[0]
            except _MALFORMED:
                return 0
            query = query.where(sa.or_(AccessToken.jti == jti, AccessToken.parent_jti == jti))
        if file_id is not None:
            query = query.where(AccessToken.file_id == file_id)
        if user_id is not None:
            query = query.where(AccessToken.user_id == user_id)
        if drive_id is not None:
            query = query.where(AccessToken.file_id.in_(_resources_in(drive_id)))
        if token is None and file_id is None and user_id is None and drive_id is None:
            raise ValueError("say which tokens to revoke")
        revoked = 0
        if token is not None or user_id is not None:
            # The token's own row first (of a user's, the API tokens'), a statement of its own: on PostgreSQL (READ
            # COMMITTED) it waits for a launch link being issued under it (which holds that row: LaunchLinks.issue)
            # to commit, and the next statement, a later snapshot, sees the link's token and revokes it too.
            own = AccessToken.jti == jti if token is not None else AccessToken.file_id == API
            revoked = cast(sa.CursorResult, session.execute(query.where(own).values(revoked_at=now))).rowcount
        if file_id is not None and token is None and drive_id is None and is_id(file_id):
            # First the file's row, which every change to the file holds as it asks require_live: one in flight
            # lands before this returns, and a later one finds the revocation. A deleted file needs none (404).
            if session.execute(locking(session, sa.select(File.id).where(File.id == file_id))).first() is not None:
                key = {"file_id": file_id, "user_id": user_id or ""}
                if not insert_if_absent(session, FileRevocation, **key, revoked_at=now):
                    session.execute(sa.update(FileRevocation).filter_by(**key).values(revoked_at=now))
        return revoked + cast(sa.CursorResult, session.execute(query.values(revoked_at=now))).rowcount

    def purge(self, session: Session) -> int:
        """Delete the rows of expired and revoked tokens (a token without a row is refused anyway), and the
        revocations of files that no live token predates. Returns how many tokens' rows went."""
        now = self._clock.now()
        query = sa.delete(AccessToken).where(sa.or_(AccessToken.expires_at <= now, AccessToken.revoked_at.is_not(None)))
        purged = cast(sa.CursorResult, session.execute(query)).rowcount
        predated = sa.exists().where(  # by a live WOPI token (an API token opens no file through WOPI)
            AccessToken.file_id != API,
            AccessToken.created_at <= FileRevocation.revoked_at,
            sa.or_(FileRevocation.user_id == "", AccessToken.user_id == FileRevocation.user_id),
        )
        session.execute(sa.delete(FileRevocation).where(~predated))
        return purged

    def _open(self, token: str) -> tuple[str, ...]:
        """The checked payload fields of a token; raises one of _MALFORMED.

        Only the spelling we issued is accepted: base32 also decodes upper case, `=` padding and
        other values of the unused low bits of the last character, and a token must have one form.
        """
        signed = base64.b32decode(token.upper() + "=" * (-len(token) % 8))
        if _encode(signed) != token:
            raise ValueError("not the issued spelling of a token")
        return tuple(self._signer.unsign(signed).decode("ascii").split(":"))


def revoked_on(tokens: sa.Table, resource: sa.ColumnElement) -> sa.ColumnElement:
    """When the token whose row is in `tokens` was revoked for use on `resource` (a file's id, or another
    resource, which no file revocation names): its row's revocation, or a revocation of the file since the row
    was issued (its time of issue, then); NULL while it is live there."""
    refused = (
        sa.exists()
        .where(
            _REVOCATIONS.c.file_id == resource,
            sa.or_(_REVOCATIONS.c.user_id == "", _REVOCATIONS.c.user_id == tokens.c.user_id),
            _REVOCATIONS.c.revoked_at >= tokens.c.created_at,
        )
        .correlate(tokens)
    )
    # A row of the file's own was revoked with the file: only a token handed out from another's row asks for
    # the file's revocations, so the file's own tokens, nearly every request, skip the subquery.
    handed_out = tokens.c.file_id != resource
    return sa.case((sa.and_(handed_out, refused), tokens.c.created_at), else_=tokens.c.revoked_at)


def _checked(resource: str, rights: str) -> str:
    if resource == API or not resource.startswith(("c-", ECOSYSTEM)):  # files and API tokens
        if rights not in _FILE_RIGHTS:
            raise ValueError(f"a file or API token's rights are r or w, not {rights!r}")
        return rights
    return folder_rights(rights)


def _resources_in(drive_id: str) -> sa.CompoundSelect:
    """The resources of the tokens for a drive's files and containers. A token derived from one of those has
    no row of its own: it goes with it, whatever it names."""
    folders = sa.select(Folder.id).where(Folder.drive_id == drive_id)
    return sa.union_all(
        sa.select(File.id).where(File.folder_id.in_(folders)),
        sa.select(sa.literal("c-") + Folder.id).where(Folder.drive_id == drive_id),  # container(folder id)
    )


def _kind(resource: str) -> str:
    if resource == API:
        return "an API token"
    if resource.startswith("c-"):
        return "an access token for a container"
    if resource == ECOSYSTEM:
        return "an access token for the ecosystem"
    return "an access token for a file"


def _encode(signed: bytes) -> str:
    return base64.b32encode(signed).decode("ascii").rstrip("=").lower()


_EPOCH = datetime(1970, 1, 1)
_TOKENS = cast(sa.Table, AccessToken.__table__)
_REVOCATIONS = cast(sa.Table, FileRevocation.__table__)
_WOPI_TICKETS = (FILE_URL, LAUNCH)
_REVOKED_AT = Prepared(
    sa.select(revoked_on(_TOKENS, sa.bindparam("resource", type_=sa.String)))
    .where(_TOKENS.c.jti == sa.bindparam("jti"))
    .with_for_update(read=True)
)
# a token's user and its revocation on the resource it is used on (verify, and a WOPI ticket's file)
_ROW_ON = sa.select(_TOKENS.c.user_id, revoked_on(_TOKENS, sa.bindparam("resource", type_=sa.String))).where(
    _TOKENS.c.jti == sa.bindparam("jti")
)
_MALFORMED = (binascii.Error, itsdangerous.BadSignature, ValueError, OverflowError)


def _epoch(moment: datetime) -> int:
    return int((moment - _EPOCH).total_seconds())
