"""URLs that WOPI responses hand out, each with a token derived from the calling one (docs/wopi.md §4.2).

The rights each derived token gets are decided here, and only here:

* the containers above a file or a container get the caller's `reach`, for their rights and reach:
  a token never gains more around it than it was issued with;
* a container's children (EnumerateChildren) get the container's rights (its files: "w" if the
  container's rights include writing them, else "r"), and as reach what the container and its own
  reach have in common;
* what the caller creates (CreateChildContainer, CreateChildFile, PutRelativeFile) is the caller's:
  every right on it, and the reach of a child;
* the ecosystem gets the caller's reach, and so does the root container it points to;
* the caller's own file, handed back (RenameFile), gets the caller's rights and reach.

Every derived token keeps the caller's jti and expiry (WOPI asks that tokens handed out in responses
expire with the calling one), so revoking the calling token revokes them all.
"""

from __future__ import annotations

from ..containers import Container
from ..models import File
from ..services import Services
from ..tokens import ECOSYSTEM, FOLDER_RIGHTS, Grant, container

Pointer = dict[str, str]


def _common(a: str, b: str) -> str:
    return "".join(ch for ch in a if ch in b)


def _child_reach(grant: Grant) -> str:
    return _common(grant.rights, grant.reach)


def _url(services: Services, path: str, token: str) -> str:
    return f"{services.settings.public_url}/wopi/{path}?access_token={token}"


def container_url(services: Services, grant: Grant, folder_id: str, rights: str, reach: str) -> str:
    issued = services.tokens.derive(grant, container(folder_id), rights, reach)
    return _url(services, f"containers/{folder_id}", issued.token)


def file_url(services: Services, grant: Grant, file_id: str, can_write: bool, reach: str) -> str:
    issued = services.tokens.derive(grant, file_id, "w" if can_write else "r", reach)
    return _url(services, f"files/{file_id}", issued.token)


def ancestor(services: Services, grant: Grant, item: Container) -> Pointer:
    return {"Name": item.name, "Url": container_url(services, grant, item.id, grant.reach, grant.reach)}


def child_container(services: Services, grant: Grant, item: Container) -> Pointer:
    return {"Name": item.name, "Url": container_url(services, grant, item.id, grant.rights, _child_reach(grant))}


def child_file(services: Services, grant: Grant, file: File) -> str:
    return file_url(services, grant, file.id, grant.may("w"), _child_reach(grant))


def created_container(services: Services, grant: Grant, item: Container) -> tuple[Pointer, Grant]:
    """The pointer to a container the caller made, and the grant its token carries."""
    issued = services.tokens.derive(grant, container(item.id), FOLDER_RIGHTS, _child_reach(grant))
    return {"Name": item.name, "Url": _url(services, f"containers/{item.id}", issued.token)}, issued.grant


def created_file(services: Services, grant: Grant, file_id: str) -> tuple[str, Grant]:
    """The URL of a file a container's caller made (CreateChildFile), and the grant its token carries (which
    may write the file though the caller's may not: its host page links must open with that grant)."""
    issued = services.tokens.derive(grant, file_id, "w", _child_reach(grant))
    return _url(services, f"files/{file_id}", issued.token), issued.grant


def same_file(services: Services, grant: Grant) -> str:
    """The URL of the caller's own file (RenameFile's Url, which Collabora takes for the document it has open once
    renamed): the caller's rights and reach, nothing more."""
    return file_url(services, grant, grant.resource, grant.can_write, grant.reach)


def sibling_file(services: Services, grant: Grant, file_id: str) -> str:
    """The URL of a file a file's caller made beside it (PutRelativeFile): the same containers are above it."""
    return file_url(services, grant, file_id, True, grant.reach)


def ecosystem(services: Services, grant: Grant) -> Pointer:
    issued = services.tokens.derive(grant, ECOSYSTEM, "", grant.reach)
    return {"Url": _url(services, "ecosystem", issued.token)}


def root_container(services: Services, grant: Grant, item: Container) -> tuple[Pointer, Grant]:
    """The root container an ecosystem token points to, and the grant its token carries."""
    issued = services.tokens.derive(grant, container(item.id), grant.reach, grant.reach)
    return {"Name": item.name, "Url": _url(services, f"containers/{item.id}", issued.token)}, issued.grant
