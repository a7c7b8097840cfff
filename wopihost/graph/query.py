"""The OData options a read takes: $select (which properties an answer carries) and $expand (children).

Each may come with or without its `$` (`select=name,size`, as OneDrive's documents write it), and
percent-encoded (`%24select`, as the Graph SDKs send it), which Werkzeug has decoded already.
"""

from __future__ import annotations

from collections.abc import Mapping

from flask import request

# Always answered, selected or not, as OneDrive's documents show it (`select=name,size` answers the id too): a
# client that selects properties still tells its items apart by it.
_ALWAYS = frozenset({"id"})


def option(args: Mapping[str, str], name: str) -> str | None:
    """The option `name` ("select", "expand") as `$name` or `name`."""
    return args.get(f"${name}", args.get(name))


def selection(args: Mapping[str, str] | None = None) -> frozenset[str] | None:
    """The properties $select names (lower case: Graph reads them without regard to case), None for all of them.
    `parentReference/path` selects parentReference whole; a name the host has no property of selects nothing,
    as Graph answers a property an item lacks (webUrl, ...) by leaving it out rather than refusing the read."""
    value = option(request.args if args is None else args, "select")
    names = {name.strip().split("/")[0].lower() for name in (value or "").split(",")} - {""}
    return None if not names or "*" in names else frozenset(names)


def selected(body: dict, fields: frozenset[str] | None) -> dict:
    """The properties of `body` (a driveItem or a drive) that `fields` selects, the id always among them.
    Annotations too are selected by name: `@microsoft.graph.downloadUrl` comes only if asked for, as in Graph."""
    if fields is None:
        return body
    return {key: value for key, value in body.items() if key in _ALWAYS or key.lower() in fields}


def expansions() -> dict[str, dict[str, str]]:
    """The navigation properties $expand names, each with its own options: `children($select=id,name;$top=5)`
    is {"children": {"$select": "id,name", "$top": "5"}}."""
    value = option(request.args, "expand") or ""
    found: dict[str, dict[str, str]] = {}
    for item in _split(value, ","):
        name, _, rest = item.partition("(")
        options = {}
        for pair in _split(rest[: rest.rfind(")")] if rest else "", ";"):
            key, _, setting = pair.partition("=")
            options[key.strip()] = setting.strip()
        if name.strip():
            found[name.strip()] = options
    return found


def _split(value: str, separator: str) -> list[str]:
    """`value` split at each `separator` outside parentheses."""
    parts, depth, part = [], 0, ""
    for char in value + separator:
        if char == "(":
            depth += 1
        elif char == ")":
            depth = max(depth - 1, 0)
        if char == separator and depth == 0:
            parts.append(part)
            part = ""
        else:
            part += char
    return parts
