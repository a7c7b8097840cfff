"""The built-in host page (docs/wopi.md §6.6): the page a browser opens to view or edit a file in the WOPI
client, reachable only through a launch link, and the launch API that makes links.

The page follows Microsoft's host page: it takes the client's action URL for the file's extension from the
discovery, fills its placeholders, and POSTs `access_token` and `access_token_ttl` into a full-window iframe, so
the token never appears in a URL. It answers the client's PostMessage only from the action URL's origin.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import secrets
from datetime import timedelta
from urllib.parse import quote, urlsplit

from flask import Blueprint, Response, current_app, jsonify, render_template_string, request
from werkzeug.exceptions import HTTPException

from .body import JsonTooLarge, drain, json_request_body
from .clock import to_epoch_ms
from .config import LANGUAGE_TAG
from .discovery import ActionNotFound, DiscoveryError, transform_urlsrc, with_query
from .errorpage import error_page, fault_page, http_error_page
from .errors import WopiError, with_headers_of
from .faults import RETRY_AFTER, InsufficientStorage, Unavailable
from .ids import new_id
from .launches import INVALID, PATH
from .names import split_extension
from .requesturl import DEFAULT_PORTS
from .services import Services
from .tokens import API, bearer

log = logging.getLogger("wopihost.hostpage")
blueprint = Blueprint("hostpage", __name__, url_prefix=PATH)


_PAGE = """<!doctype html>
<html>
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1, maximum-scale=1, minimum-scale=1, user-scalable=no">
<title>{{ title }}</title>
{% if favicon %}<link rel="shortcut icon" href="{{ favicon }}">{% endif %}
<style nonce="{{ nonce }}">
html, body { margin: 0; padding: 0; height: 100%; overflow: hidden; }
#office_frame { width: 100%; height: 100%; position: absolute; top: 0; left: 0; right: 0; bottom: 0;
                margin: 0; border: none; display: block; }
</style>
</head>
<body>
<form id="office_form" name="office_form" target="office_frame" action="{{ action_url }}" method="post">
<input name="access_token" value="{{ token }}" type="hidden">
<input name="access_token_ttl" value="{{ token_ttl }}" type="hidden">
</form>
<span id="frameholder"></span>
<script nonce="{{ nonce }}">
(function () {
  var clientOrigin = {{ client_origin|tojson }}, clientScheme = {{ client_scheme|tojson }},
      siblings = {{ siblings|tojson }};
  var frame = document.createElement("iframe");
  frame.name = "office_frame";
  frame.id = "office_frame";
  frame.title = "Office Frame";  // screen readers announce it
  frame.setAttribute("allowfullscreen", "true");
  frame.setAttribute("allow", "clipboard-read; clipboard-write; fullscreen");  // Collabora's copy and paste
  frame.setAttribute("sandbox", {{ sandbox|tojson }});
  document.getElementById("frameholder").appendChild(frame);
  document.getElementById("office_form").submit();

  // The client's PostMessage: only from its frame, at the action URL's origin or a sibling host of it (Office
  // may answer from a regional host of its domain), and only back to that origin.
  function fromClient(origin) {
    return origin === clientOrigin || (siblings !== null && origin.indexOf(clientScheme + "://") === 0 &&
                                       origin.slice(-siblings.length) === siblings);
  }
  window.addEventListener("message", function (event) {
    if (event.source !== frame.contentWindow || !fromClient(event.origin)) return;
    var message;
    try { message = typeof event.data === "string" ? JSON.parse(event.data) : event.data; } catch (e) { return; }
    if (message && message.MessageId === "App_LoadingStatus") {
      frame.contentWindow.postMessage(JSON.stringify(
        {MessageId: "Host_PostmessageReady", SendTime: Date.now(), Values: {}}), event.origin);
    }
  });

  // Office's wdPreviousSession / wdPreviousCorrelation went to the client once; a reload must not send them again.
  var url = new URL(window.location.href), kept = new URLSearchParams();
  url.searchParams.forEach(function (value, key) { if (!/^wdPrevious/i.test(key)) kept.append(key, value); });
  if (kept.toString() !== url.searchParams.toString()) {
    url.search = kept.toString();
    window.history.replaceState(null, "", url.toString());
  }
})();
</script>
</body>
</html>
"""

# What Microsoft's sample lets the client frame do: run its scripts, reach its own origin, submit forms,
# open its help and sharing windows, download, print, and navigate the top window (its Close and
# "Edit in browser" go to CloseUrl / HostEditUrl).
_SANDBOX = (
    "allow-scripts allow-same-origin allow-forms allow-popups allow-top-navigation "
    "allow-popups-to-escape-sandbox allow-downloads allow-modals"
)
_NO_CACHE = {
    "Cache-Control": "no-cache, no-store",
    "Expires": "-1",
    "Pragma": "no-cache",
    "X-Content-Type-Options": "nosniff",
    # the URL carries the launch ticket: it must not reach the client's logs as a Referer
    "Referrer-Policy": "no-referrer",
}
# An error page runs nothing and loads nothing; it may be framed where the page may (frame-ancestors, _csp)
_MESSAGE_HEADERS = {
    **_NO_CACHE,
    "Content-Security-Policy": "default-src 'none'; base-uri 'none'; frame-ancestors 'self'",
}


def _services() -> Services:
    return current_app.extensions["wopihost"]


# No automatic OPTIONS (as Graph's): its 200 came with none of the page's headers, and the page has no CORS to
# preflight; OPTIONS is a method the page does not take, 405 with Allow, in the page's headers
@blueprint.get("/<action>/<ticket>", provide_automatic_options=False)
def page(action: str, ticket: str) -> Response:
    services = _services()
    launch = services.launches.open(action, ticket)
    if services.discovery is None:
        return _unavailable("No WOPI client", "This host has no WOPI client configured (WOPIHOST_DISCOVERY_URL).")
    try:
        discovery = services.discovery.get()
        extension = split_extension(launch.file_name)[1]
        try:
            client_action = discovery.action(extension, action)
        except ActionNotFound:
            if action != "view":
                raise
            # Collabora's discovery has `view` only for the files it cannot edit: it views the others through
            # `edit`, read-only when the token cannot write (as oCIS opens them), so the viewer gets such a token.
            client_action = discovery.action(extension, "edit")
            launch = services.launches.read_only(launch)
    except ActionNotFound:
        return _message(
            404,
            "Cannot open this file",
            f"The WOPI client offers no {action} action for files like {launch.file_name}.",
        )
    except DiscoveryError as exc:
        log.warning("host page: the discovery is unusable: %s", exc)
        return _unavailable("WOPI client unavailable", "The WOPI client's discovery could not be read.")
    session_id = new_id(16)
    url = _pass_through_wd(
        transform_urlsrc(client_action.urlsrc, services.wopi_src(launch.file_id), _placeholders(services, session_id))
    )
    try:
        scheme, host, port = _origin(url)
    except ValueError as exc:
        log.warning("host page: the discovery's action URL has no usable origin: %s", exc)
        return _unavailable("WOPI client unavailable", "The WOPI client's discovery could not be read.")
    origin = f"{scheme}://{host}{port}"
    # A HEAD (a chat client's link preview) gets what a GET would, headers only, and opens no session: the line a
    # client's support logs are matched with is written for the page a browser loads. Nothing of the link is used
    # up either way: it opens as often as needed while it lives (launches.py).
    if request.method != "HEAD":
        log.info(
            "host page: %s of file %s for user %s, host session %s", action, launch.file_id, launch.user_id, session_id
        )
    nonce = secrets.token_urlsafe(16)
    html = render_template_string(
        _PAGE,
        title=launch.file_name,
        favicon=client_action.favicon,
        nonce=nonce,
        action_url=url,
        token=launch.token,
        token_ttl=to_epoch_ms(launch.token_expires_at),
        client_origin=origin,
        client_scheme=scheme,
        siblings=_siblings(host, port),
        sandbox=_SANDBOX,
    )
    return Response(
        html,
        mimetype="text/html",
        headers={**_NO_CACHE, "Content-Security-Policy": _csp(nonce, origin, client_action.favicon)},
    )


@blueprint.post("/links", provide_automatic_options=False)
def create_link() -> Response:
    """The launch API: `Authorization: Bearer <API token>`, JSON `{"fileId": ..., "action": "view"}`."""
    services = _services()
    with services.db.read() as s:
        grant = services.tokens.verify(s, bearer(request.headers.get("Authorization")), API)
    try:
        body = json_request_body()
    except JsonTooLarge as exc:
        raise WopiError(413, str(exc)) from None
    except ValueError:
        body = None
    if not isinstance(body, dict) or not isinstance(body.get("fileId"), str):
        raise WopiError(400, 'the body must be JSON: {"fileId": "...", "action": "view" | "edit" | "editnew"}')
    action = body.get("action", "view")
    if not isinstance(action, str):
        raise WopiError(400, "action must be a string")
    settings, left = services.settings, grant.expires_at - services.clock.now()  # never past the API token
    link = services.launches.issue(
        body["fileId"],
        grant.user_id,
        action,
        can_write=grant.can_write,
        ttl=min(timedelta(seconds=settings.launch_link_ttl), left),
        token_ttl=min(timedelta(seconds=settings.token_ttl), left),
        under=grant,
    )
    response = jsonify(
        {
            "url": services.launch_url(link.action, link.ticket),
            "action": link.action,
            "fileId": link.file_id,
            "expiresAt": link.expires_at.isoformat() + "Z",
        }
    )
    response.status_code = 201
    response.headers["Cache-Control"] = "no-store"
    return response


@blueprint.errorhandler(WopiError)
def _refused(error: WopiError) -> Response:
    if _launch_api():
        return _api_error(error.status, error.code or _CODES.get(error.status, "invalidRequest"), error.reason)
    if error.status == 401:  # one answer for a bad, expired or revoked link, a missing file ...
        return _message(403, "Link not valid", f"{INVALID}. Ask for a new one.")
    return _message(error.status, "Cannot open this file", error.reason)


@blueprint.errorhandler(Unavailable)
@blueprint.errorhandler(InsufficientStorage)
def _fault(error: Unavailable | InsufficientStorage) -> Response:
    log.warning("%s %s: %s", request.method, request.path, error)
    if not _launch_api():
        return fault_page(error, _MESSAGE_HEADERS)
    if isinstance(error, InsufficientStorage):
        return _api_error(507, "insufficientStorage", str(error))
    response = _api_error(503, "serviceNotAvailable", str(error))
    response.headers["Retry-After"] = str(error.retry_after)  # as every other 503 of the app says when to try again
    return response


_CODES = {400: "invalidRequest", 401: "unauthenticated", 403: "accessDenied", 404: "itemNotFound"}


def handles(path: str) -> bool:
    """Whether a path is the host page's, for errors raised before any blueprint is chosen (a link cut short, an
    unknown method)."""
    return path == PATH or path.startswith(PATH + "/")


def http_error(error: HTTPException) -> Response:
    """Werkzeug's errors below the host page's path, as the page's other errors; the launch API's in its JSON."""
    if not _launch_api():
        return http_error_page(error, _MESSAGE_HEADERS)
    status = error.code or 500
    return with_headers_of(
        _api_error(status, _CODES.get(status, "invalidRequest"), error.description or error.name), error
    )


def _launch_api() -> bool:
    """Whether the request is the launch API's (POST /host/links, and what a program mistypes of it): its errors
    are JSON for a program, where the page's are a page for a person."""
    return request.method == "POST" and request.path.startswith(f"{PATH}/links")


def _api_error(status: int, code: str, message: str) -> Response:
    """An error of the launch API (a POST): JSON for a program, in Graph's shape."""
    drain(request.environ, request.stream)  # as every error of the app: the connection carries the next request
    response = jsonify({"error": {"code": code, "message": message}})
    response.status_code = status
    if status == 401:  # RFC 9110 §15.5.2: a 401 says how to authenticate (as Graph's do)
        response.headers["WWW-Authenticate"] = 'Bearer realm="wopihost"'
    return response


def _message(status: int, title: str, message: str) -> Response:
    return error_page(status, title, message, _MESSAGE_HEADERS)


def _unavailable(title: str, message: str) -> Response:
    """503 for a WOPI client the page cannot reach (none configured, a discovery not to be read): with Retry-After,
    as every other 503 of the app."""
    response = _message(503, title, message)
    response.headers["Retry-After"] = str(RETRY_AFTER)
    return response


def _placeholders(services: Services, session_id: str) -> dict[str, str]:
    """The values this host gives the action URL's placeholders; the others are left out (docs/wopi.md §6.1)."""
    language = services.settings.ui_language
    for tag in request.accept_languages.values():
        if LANGUAGE_TAG.match(tag):
            language = tag
            break
    return {"UI_LLCC": language, "DC_LLCC": language, "HOST_SESSION_ID": session_id}


def _pass_through_wd(url: str) -> str:
    """The host page passes on the `wd*` parameters it was called with (Office's own diagnostics)."""
    extra = "&".join(
        f"{quote(k, safe='')}={quote(v, safe='')}"
        for k, v in request.args.items(multi=True)
        if k.lower().startswith("wd")
    )
    return with_query(url, extra) if extra else url


_HOST = re.compile(r"[a-z0-9]([a-z0-9_-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9_-]*[a-z0-9])?)*\.?")


def _origin(url: str) -> tuple[str, str, str]:
    """(scheme, host, ":port" or "") of `url` as a browser spells its origin, which the page compares with
    MessageEvent.origin and which a Content-Security-Policy header (latin-1) must hold: the host in lower
    case and in ASCII (IDNA), no port where it is the scheme's default. ValueError for a host or port that
    no browser would take, and for a URL that is not absolute http(s): the page posts the access token there."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an absolute http(s) URL: {url[:100]!r}")
    host = parts.hostname.encode("idna").decode("ascii")
    if ":" in host and "%" not in host:  # (a zone id is no part of an origin)
        host = f"[{ipaddress.IPv6Address(host)}]"
    elif not _HOST.fullmatch(host):  # the IDNA codec checks only label lengths: `;` would end a CSP directive
        raise ValueError(f"not a host name: {host[:100]!r}")
    port = parts.port
    return parts.scheme, host, f":{port}" if port is not None and port != DEFAULT_PORTS.get(parts.scheme) else ""


def _siblings(host: str, port: str) -> str | None:
    """The suffix of the client's sibling hosts (".officeapps.live.com" for word-edit.officeapps.live.com), or
    None where there are none to trust: an IP address, or a name of two labels or fewer."""
    labels = host.split(".")
    if len(labels) < 3 or labels[-1].isdigit() or ":" in host:
        return None
    return "." + host.split(".", 1)[1] + port


def _csp(nonce: str, client_origin: str, favicon: str) -> str:
    """The page runs only its own script and style; its frame and form go to the client, or anywhere over https,
    where the client may send them (Office takes business users to their sign-in page within the frame)."""
    images = "'none'"
    if favicon:
        try:
            scheme, host, port = _origin(favicon)
            images = f"{scheme}://{host}{port}"
        except ValueError:  # the page shows no icon rather than none at all
            pass
    return (
        f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
        f"frame-src {client_origin} https:; form-action {client_origin} https:; img-src {images}; "
        "base-uri 'none'; frame-ancestors 'self'"
    )
