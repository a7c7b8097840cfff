"""Access tokens: signed, bound to one file, one user and a permission set, expiring, revocable.

A WOPI access token is bound to one file. An API token (Graph's `Authorization: Bearer`) is bound to
no file (`file_id` ""): it reaches the drives its user may reach. Each is refused where the other is
expected.

Wire form: base32 (lower case, no padding) of an itsdangerous-signed payload
`<jti>:<file_id>:<r|w>:<expiry seconds>`. Base32 keeps the token to [a-z2-7]:
WOPI clients sign the URL that carries the token, and only an alphanumeric token
looks the same percent-encoded and decoded (docs/wopi.md §6.2). About 150
characters, well inside Office's URL limits.

The signature lets us reject forged or foreign tokens without a database hit;
the `access_tokens` row (keyed by jti) carries the user and makes revocation work.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

import itsdangerous
import sqlalchemy as sa
from sqlalchemy.orm import Session

from .clock import Clock
from .errors import unauthorized
from .ids import new_id
from .models import AccessToken

JTI_LENGTH = 16
API = ""  # the file_id of an API token
DOWNLOAD_TTL = timedelta(hours=1)


@dataclass(frozen=True)
class Grant:
    """What a verified token allows."""
    jti: str
    file_id: str
    user_id: str
    can_write: bool
    expires_at: datetime


@dataclass(frozen=True)
class IssuedToken:
    token: str
    grant: Grant


class Tokens:
    def __init__(self, secret: str, clock: Clock):
        self._signer = itsdangerous.Signer(secret, salt="wopihost.access-token", digest_method=hashlib.sha256)
        self._tickets = itsdangerous.Signer(secret, salt="wopihost.download", digest_method=hashlib.sha256)
        self._clock = clock

    def issue(self, session: Session, file_id: str, user_id: str, can_write: bool,
              expires_at: datetime) -> IssuedToken:
        expires_at = expires_at.replace(microsecond=0)  # the token carries whole seconds
        jti = new_id(JTI_LENGTH)
        session.add(AccessToken(jti=jti, file_id=file_id, user_id=user_id, can_write=can_write,
                                expires_at=expires_at, created_at=self._clock.now()))
        payload = f"{jti}:{file_id}:{'w' if can_write else 'r'}:{_epoch(expires_at)}"
        signed = self._signer.sign(payload.encode("ascii"))
        return IssuedToken(_encode(signed), Grant(jti, file_id, user_id, can_write, expires_at))

    def verify(self, session: Session, token: str | None, file_id: str) -> Grant:
        """The grant of a token used on `file_id`; WopiError 401 if it is not valid for it."""
        if not token:
            raise unauthorized("no access token")
        try:
            jti, token_file_id, perm, expiry = self._open(token)
            expires_at = _EPOCH + timedelta(seconds=int(expiry))
        except _MALFORMED:
            raise unauthorized("the access token is not valid") from None
        if token_file_id != file_id:
            raise unauthorized("this is an access token for one file, not an API token" if not file_id
                               else "the access token is not for this file")
        if expires_at <= self._clock.now():
            raise unauthorized("the access token has expired")
        row = session.get(AccessToken, jti)
        if row is None or row.revoked_at is not None:
            raise unauthorized("the access token has been revoked")
        return Grant(jti, file_id, row.user_id, perm == "w", expires_at)

    def download_ticket(self, grant: Grant, file_id: str) -> str:
        """A short-lived credential for one file's content (Graph's @microsoft.graph.downloadUrl), bound
        to the token it was issued under, so revoking that token revokes it too."""
        expiry = min(_epoch(grant.expires_at), _epoch(self._clock.now() + DOWNLOAD_TTL))
        return _encode(self._tickets.sign(f"{grant.jti}:{file_id}:{expiry}".encode("ascii")))

    def open_download_ticket(self, session: Session, ticket: str) -> tuple[str, str]:
        """The file id a download ticket is for and the user it was issued to (whose access to the file the
        caller checks again); WopiError 401 if it is not valid (any more)."""
        try:
            jti, file_id, expiry = self._open(ticket, self._tickets)
            expires_at = _EPOCH + timedelta(seconds=int(expiry))
        except _MALFORMED:
            raise unauthorized("the download URL is not valid") from None
        row = session.get(AccessToken, jti)
        if expires_at <= self._clock.now() or row is None or row.revoked_at is not None:
            raise unauthorized("the download URL has expired or its token has been revoked")
        return file_id, row.user_id

    def revoke(self, session: Session, *, token: str | None = None, file_id: str | None = None,
               user_id: str | None = None) -> int:
        """Revoke one token, or every token for a file and/or a user. Returns how many were revoked."""
        query = sa.update(AccessToken).where(AccessToken.revoked_at.is_(None))
        if token is not None:
            try:
                jti = self._open(token)[0]
            except _MALFORMED:
                return 0
            query = query.where(AccessToken.jti == jti)
        if file_id is not None:
            query = query.where(AccessToken.file_id == file_id)
        if user_id is not None:
            query = query.where(AccessToken.user_id == user_id)
        if token is None and file_id is None and user_id is None:
            raise ValueError("say which tokens to revoke")
        return session.execute(query.values(revoked_at=self._clock.now())).rowcount

    def purge(self, session: Session) -> int:
        """Delete the rows of expired and revoked tokens (a token without a row is refused anyway)."""
        query = sa.delete(AccessToken).where(sa.or_(AccessToken.expires_at <= self._clock.now(),
                                                    AccessToken.revoked_at.is_not(None)))
        return session.execute(query).rowcount

    def _open(self, token: str, signer: itsdangerous.Signer | None = None) -> list[str]:
        """The checked payload fields of a token (or, with the tickets' `signer`, a download ticket);
        raises one of _MALFORMED.

        Only the spelling we issued is accepted: base32 also decodes upper case, `=` padding and
        other values of the unused low bits of the last character, and a token must have one form.
        """
        signed = base64.b32decode(token.upper() + "=" * (-len(token) % 8))
        if _encode(signed) != token:
            raise ValueError("not the issued spelling of a token")
        return (signer or self._signer).unsign(signed).decode("ascii").split(":")


def _encode(signed: bytes) -> str:
    return base64.b32encode(signed).decode("ascii").rstrip("=").lower()


_EPOCH = datetime(1970, 1, 1)
_MALFORMED = (binascii.Error, itsdangerous.BadSignature, ValueError, OverflowError)


def _epoch(moment: datetime) -> int:
    return int((moment - _EPOCH).total_seconds())
