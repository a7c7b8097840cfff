"""Where requests come from: mounting under the public URL's path prefix, trusted proxies, and the URL a
client called (which WOPI proof signatures cover, so it must be rebuilt byte for byte).

The public URL (WOPIHOST_PUBLIC_URL) is the truth for scheme, host, port and path
prefix: a TLS-terminating reverse proxy changes all of them on the way in.
X-Forwarded-For/Proto/Host/Port are honoured only when WOPIHOST_TRUSTED_PROXIES says how
many proxies stand in front, and only from the peers WOPIHOST_FORWARDED_ALLOW_IPS names;
otherwise any client could forge them, and choose the URL its proof signature is checked against.
"""

from __future__ import annotations

from collections.abc import Sequence
from ipaddress import IPv6Address, ip_address
from urllib.parse import quote, urlsplit

from werkzeug.middleware.proxy_fix import ProxyFix

from .config import Network


def public_prefix(public_url: str) -> str:
    """'https://h/office/' -> '/office'; '' when the host is served at the root."""
    return urlsplit(public_url).path.rstrip("/")


class MountPrefix:
    """Serve the app under the public URL's prefix whether or not the proxy strips it from the path."""

    def __init__(self, app, prefix: str):
        self.app, self.prefix = app, prefix

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if self.prefix and (path == self.prefix or path.startswith(self.prefix + "/")):
            environ["PATH_INFO"] = path[len(self.prefix) :]
            environ["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "") + self.prefix
        return self.app(environ, start_response)


class FromProxies:
    """X-Forwarded-* read (ProxyFix) from a peer `proxies` holds, and dropped from anyone else's request: a node
    that listens where others than its balancer reach it must not take their word for the URL they called."""

    def __init__(self, app, trusted_proxies: int, proxies: Sequence[Network]):
        self.app, self.proxies = app, proxies
        self.proxied = ProxyFix(
            app, x_for=trusted_proxies, x_proto=trusted_proxies, x_host=trusted_proxies, x_port=trusted_proxies
        )

    def __call__(self, environ, start_response):
        if self._from_proxy(environ.get("REMOTE_ADDR") or ""):
            return self.proxied(environ, start_response)
        for key in [key for key in environ if key.startswith("HTTP_X_FORWARDED_")]:
            del environ[key]
        return self.app(environ, start_response)

    def _from_proxy(self, peer: str) -> bool:
        try:
            address = ip_address(peer)
        except ValueError:  # no IP address: a Unix socket's peer, on this machine (gunicorn trusts it too)
            return True
        if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:  # an IPv4 peer of a [::] listener
            address = address.ipv4_mapped
        return any(address in network for network in self.proxies)


def wrap(wsgi_app, public_url: str, trusted_proxies: int, proxies: Sequence[Network]):
    """The app as the WSGI server should call it."""
    app = MountPrefix(wsgi_app, public_prefix(public_url))
    return FromProxies(app, trusted_proxies, proxies) if trusted_proxies > 0 else app


DEFAULT_PORTS = {"http": 80, "https": 443}


def _without_default_port(scheme: str, host: str) -> str:
    """`host` as a client writes it in a URL: X-Forwarded-Port makes ProxyFix spell out even the scheme's
    default port ("example.com:443"), which the URL the client called, and signed, leaves out."""
    name, colon, port = host.rpartition(":")
    return name if colon and port == str(DEFAULT_PORTS.get(scheme)) else host


def called_url(environ, public_url: str, trusted_proxies: int) -> str:
    """The full URL the client requested, as it sent it (percent-encoding and query untouched)."""
    parts = urlsplit(public_url)
    if trusted_proxies > 0 and environ.get("HTTP_X_FORWARDED_HOST"):
        # ProxyFix has put the forwarded scheme and host into the environ. Without a forwarded host the
        # request did not come through the proxy, and the caller's own Host header must not pick the URL.
        scheme = environ["wsgi.url_scheme"]
        origin = f"{scheme}://{_without_default_port(scheme, environ['HTTP_HOST'])}"
    else:
        origin = f"{parts.scheme}://{parts.netloc}"
    prefix = public_prefix(public_url)
    # gunicorn keeps the request target as received in RAW_URI; other servers only give decoded parts.
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if raw:
        path, _, query = raw.partition("?")
        if "://" in path:  # absolute-form (RFC 9112 §3.2.2), which a server must accept: the path follows the host
            after = path.partition("://")[2]
            path = after[after.find("/") :] if "/" in after else "/"
    else:
        path = quote(environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", ""), safe="/:@!$&'()*+,;=-._~")
        query = environ.get("QUERY_STRING", "")
    if prefix and (path == prefix or path.startswith(prefix + "/")):
        path = path[len(prefix) :]  # the proxy kept the prefix; it is added back below, once
    return f"{origin}{prefix}{path}" + (f"?{query}" if query else "")
