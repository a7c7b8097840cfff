"""Handlers for the containers and ecosystem endpoints (docs/wopi.md §4), and the file endpoints that point
into them (EnumerateAncestors, GetEcosystem). What each token handed out may do is pointers.py's."""

from __future__ import annotations

from dataclasses import dataclass
from functools import wraps

from flask import Response, jsonify

from ..clock import iso_round_trip
from ..containers import Container, invalid_container_name
from ..errors import WopiError, WopiResponse, bad_request, not_found
from ..names import InvalidName, decode_name
from ..services import Services
from ..shares import READ_ONLY, READ_WRITE
from ..tokens import Grant
from . import pointers
from .files import Admits, Call, share_url_type, target_headers
from .requests import header, name_header


@dataclass(frozen=True)
class ContainerCall(Admits):
    """One authenticated WOPI request on one container (`folder_id`), or on the ecosystem ("")."""

    services: Services
    folder_id: str
    grant: Grant

    def container(self) -> Container:
        """The container, 404 if there is none: asked before an operation reads its headers, as Call.file is."""
        return self.services.containers.get(self.folder_id)

    def require(self, right: str, doing: str) -> None:
        if not self.grant.may(right):
            raise not_found(f"the access token does not allow {doing} in this container")


def containers_on(handler):
    """501 while WOPIHOST_CONTAINERS is off: the host then offers the plain file surface only."""

    @wraps(handler)
    def guarded(call) -> Response:
        if not call.services.settings.containers:
            raise WopiError(501, "containers and the ecosystem are turned off on this host")
        return handler(call)

    return guarded


def container_info(grant: Grant, item: Container) -> dict:
    manage = grant.may("m") and not item.is_root  # a root is neither renamed nor deleted
    return {
        "Name": item.name,
        "UserCanCreateChildContainer": grant.may("c"),
        "UserCanCreateChildFile": grant.may("c"),
        "UserCanDelete": manage,
        "UserCanRename": manage,
        "SupportedShareUrlTypes": _share_types(grant),
        # as in CheckFileInfo: the same user, the same answers
        "IsAnonymousUser": False,
        "IsEduUser": False,
        "LicenseCheckForEditIsEnabled": False,
    }


def _share_types(grant: Grant) -> list[str]:
    """A link shares the container's contents: it needs the right to list them; a read-write one, which also
    takes new files, the rights to write and to create them."""
    if not grant.may("l"):
        return []
    return [READ_ONLY, READ_WRITE] if grant.may("w") and grant.may("c") else [READ_ONLY]


# -- containers --------------------------------------------------------------------------------


@containers_on
def check_container_info(call: ContainerCall) -> Response:
    return jsonify(container_info(call.grant, call.services.containers.get(call.folder_id)))


@containers_on
def enumerate_container_ancestors(call: ContainerCall) -> Response:
    return _ancestors(call.services, call.grant, call.services.containers.ancestors(call.folder_id))


@containers_on
def enumerate_children(call: ContainerCall) -> Response:
    call.require("l", "listing what is")
    services, grant = call.services, call.grant
    folders, files = services.containers.children(call.folder_id, _extension_filter())
    return jsonify(
        {
            "ChildContainers": [pointers.child_container(services, grant, folder) for folder in folders],
            "ChildFiles": [
                {
                    "Name": f.name,
                    "Url": pointers.child_file(services, grant, f),
                    "Size": f.size,
                    "Version": str(f.version),
                    "LastModifiedTime": iso_round_trip(f.modified_at),
                }
                for f in files
            ],
        }
    )


def _extension_filter() -> set[str] | None:
    """X-WOPI-FileExtensionFilterList: `.docx,.xlsx`, matched ignoring case; a missing dot is forgiven."""
    value = header("X-WOPI-FileExtensionFilterList")
    if not value:
        return None
    found = {("" if e.startswith(".") else ".") + e.lower() for e in (part.strip() for part in value.split(",")) if e}
    return found or None


@containers_on
def get_container_ecosystem(call: ContainerCall) -> Response:
    call.container()
    return jsonify(pointers.ecosystem(call.services, call.grant))


@containers_on
def create_child_container(call: ContainerCall) -> Response:
    call.container()
    call.require("c", "creating anything")
    suggested, sent_in, raw = _one_target()
    try:
        name = decode_name(raw, sent_in)
    except InvalidName as exc:
        if not suggested:
            raise invalid_container_name(str(exc)) from None
        name = raw  # suggested mode never fails: the raw value is made into a name
    services = call.services
    created = services.containers.create_child(call.folder_id, name, suggested, call.grant.user_id, call.admit_in)
    pointer, grant = pointers.created_container(services, call.grant, created)
    return jsonify({"ContainerPointer": pointer, "ContainerInfo": container_info(grant, created)})


def _one_target() -> tuple[bool, str, str]:
    """Whether the target is suggested, the header it came in and its raw value; 501 for both headers, 400 for
    neither."""
    suggested, relative = header("X-WOPI-SuggestedTarget"), header("X-WOPI-RelativeTarget")
    if suggested is not None and relative is not None:
        raise WopiError(501, "send X-WOPI-SuggestedTarget or X-WOPI-RelativeTarget, not both")
    if suggested is not None:
        return True, "X-WOPI-SuggestedTarget", suggested
    if relative is None:
        raise bad_request("X-WOPI-SuggestedTarget or X-WOPI-RelativeTarget is required")
    return False, "X-WOPI-RelativeTarget", relative


@containers_on
def create_child_file(call: ContainerCall) -> Response:
    call.container()
    call.require("c", "creating anything")
    services = call.services
    target = target_headers(lambda: "Untitled")
    if target.overwrite:  # replacing a file is writing it, which "c" alone does not allow
        call.require("w", "overwriting a file")
    file = services.containers.create_file(call.folder_id, target, call.grant.user_id, call.admit_in, call.opens)
    url, grant = pointers.created_file(services, call.grant, file.id)
    return jsonify(
        {
            "Name": file.name,
            "Url": url,
            "HostViewUrl": services.host_page_url("view", file.id, grant),
            "HostEditUrl": services.host_page_url("edit", file.id, grant),
        }
    )


@containers_on
def delete_container(call: ContainerCall) -> Response:
    call.require("m", "deleting")
    call.services.containers.delete(call.folder_id, call.admit_in)
    return WopiResponse(status=200)


@containers_on
def rename_container(call: ContainerCall) -> Response:
    call.container()
    call.require("m", "renaming")
    requested = name_header("X-WOPI-RequestedName", invalid_name_header="X-WOPI-InvalidContainerNameError")
    if requested is None:
        raise bad_request("X-WOPI-RequestedName is required")
    renamed = call.services.containers.rename(call.folder_id, requested, call.grant.user_id, call.admit_in)
    return jsonify({"Name": renamed.name})


@containers_on
def get_container_share_url(call: ContainerCall) -> Response:
    call.container()
    url_type = share_url_type(_share_types(call.grant))
    services = call.services
    link = services.shares.link(call.folder_id, url_type, call.grant.user_id)
    return jsonify({"ShareUrl": services.share_url(link.id)})


# -- the ecosystem ------------------------------------------------------------------------------


def check_ecosystem(call: ContainerCall) -> Response:
    """Served with containers off too: WOPI gives CheckEcosystem no 501, only an answer whose SupportsContainers
    matches CheckFileInfo's (an ecosystem token handed out before they were turned off asks it)."""
    return jsonify({"SupportsContainers": call.services.settings.containers})


@containers_on
def get_root_container(call: ContainerCall) -> Response:
    """The root of the user's own drive."""
    services = call.services
    root = services.containers.root_of(services.drives.personal(call.grant.user_id).id)
    pointer, grant = pointers.root_container(services, call.grant, root)
    return jsonify({"ContainerPointer": pointer, "ContainerInfo": container_info(grant, root)})


# -- file endpoints that point into the tree ----------------------------------------------------


@containers_on
def enumerate_file_ancestors(call: Call) -> Response:
    containers = call.services.containers
    parent = containers.get(call.file().folder_id)
    return _ancestors(call.services, call.grant, [*containers.ancestors(parent.id), parent])


@containers_on
def get_file_ecosystem(call: Call) -> Response:
    call.file()  # 404 for a deleted file
    return jsonify(pointers.ecosystem(call.services, call.grant))


def _ancestors(services: Services, grant: Grant, found: list[Container]) -> Response:
    return jsonify({"AncestorsWithRootFirst": [pointers.ancestor(services, grant, item) for item in found]})
