"""What the test definitions refer to by name: contents (Resources), pre-chunked Office files for the Zip
chunking tests, and the JSON schemas.

All of it is read from a checkout of wopi-validator-core (or a copy of its files) at run time. The validator
builds these into its assembly; here a resource's "manifest name"
(`Microsoft.Office.WopiValidator.Core.Resources.ZipChunking.NonZeroByteExcel.Version1.MainContent.FileStream`)
is mapped back to the file `src/WopiValidator.Core/Resources/ZipChunking/NonZeroByteExcel/Version1/MainContent/
FileStream`.

A plain resource's content is not a file at all: the validator writes the text ResourceId + FilePath + Name
(UTF-8), except for ZeroByteFile.wopitest, which is empty. PutFile, PutRelativeFile and the content checks
all use that text.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import jsonschema

from . import dotnet
from .definitions import Resource

MANIFEST_PREFIX = "Microsoft.Office.WopiValidator.Core."
ZERO_BYTE_FILE = "ZeroByteFile.wopitest"
ZERO_BYTE_OFFICE_DOCUMENT = "ZeroByteOfficeDocument"


class ResourceError(ValueError):
    """A resource or schema the definitions name cannot be found or read."""


@dataclass(frozen=True)
class Layout:
    """Where the validator's own files are: its TestCases.xml, JSON schemas and embedded resources."""

    testcases: Path
    schemas: Path
    core: Path  # the directory manifest names are relative to (src/WopiValidator.Core)

    @classmethod
    def find(cls, testcases: str | Path) -> Layout:
        """From the path of TestCases.xml: the schemas and resources of the checkout it belongs to
        (`src/WopiValidator.Core/` beside it), or `JsonSchemas/` and `Resources/` right beside it."""
        path = Path(testcases)
        if path.is_dir():
            path = path / "TestCases.xml"
        if not path.is_file():
            raise ResourceError(f"{path} does not exist")
        for core in (path.parent / "src" / "WopiValidator.Core", path.parent):
            if (core / "JsonSchemas").is_dir():
                return cls(path, core / "JsonSchemas", core)
        raise ResourceError(f"no JsonSchemas directory next to {path} (expected src/WopiValidator.Core/JsonSchemas)")


class Resources:
    def __init__(self, layout: Layout, resources: dict[str, Resource]):
        self.layout = layout
        self.resources = resources
        self._manifest: dict[str, Path] | None = None

    def _get(self, resource_id: str | None) -> Resource:
        if not resource_id:
            raise ResourceError("ResourceId cannot be empty")
        resource = self.resources.get(resource_id)
        if resource is None:
            raise ResourceError(f"Resource with resourceId '{resource_id}' doesn't exist.")
        return resource

    def content(self, resource_id: str | None) -> bytes:
        """The body of PutFile/PutRelativeFile and what GetFile must give back."""
        resource = self._get(resource_id)
        if resource.name == ZERO_BYTE_FILE:
            return b""
        return f"{resource.id}{resource.file_path or ''}{resource.name or ''}".encode()

    def _manifest_file(self, name: str) -> Path:
        if self._manifest is None:
            core = self.layout.core
            self._manifest = {
                MANIFEST_PREFIX + ".".join(p.relative_to(core).parts): p for p in core.rglob("*") if p.is_file()
            }
        path = self._manifest.get(name)
        if path is None:
            raise ResourceError(f"no embedded resource {name} under {self.layout.core}")
        return path

    def zip_stream(self, resource_id: str | None) -> bytes:
        """The whole pre-chunked file of a Zip chunking resource."""
        resource = self._get(resource_id)
        if resource.id == ZERO_BYTE_OFFICE_DOCUMENT:
            return b""
        return self._manifest_file(f"{resource.file_path or ''}FileStream").read_bytes()

    def zip_chunks(self, resource_id: str | None) -> list[bytes]:
        """The chunks of a Zip chunking resource, in order: FileStream cut at the offsets in ChunkIds.txt
        (which, despite its name, lists offsets). An offset that does not parse, or does not follow on from
        the previous chunk, gives no chunks at all, as the validator logs and carries on."""
        resource = self._get(resource_id)
        if resource.id == ZERO_BYTE_OFFICE_DOCUMENT:
            return []
        listing = self._manifest_file(f"{resource.file_path or ''}ChunkIds.txt")
        lines = listing.read_text("utf-8-sig").splitlines()
        data = self.zip_stream(resource_id)
        offsets = [dotnet.try_parse_integer(line) for line in lines]
        if not offsets or None in offsets or offsets[0] != 0:
            return []
        bounds = [*cast(list[int], offsets), len(data)]  # None ruled out above
        if any(end < start for start, end in zip(bounds, bounds[1:])):
            return []
        return [data[start:end] for start, end in zip(bounds, bounds[1:])]


# ---------------------------------------------------------------------------------------- schemas

_COMMENTS = re.compile(r'"(?:[^"\\]|\\.)*"|//[^\n]*|/\*.*?\*/', re.DOTALL)


def _without_comments(text: str) -> str:
    """The schemas are read by Newtonsoft, which allows // and /* */ comments (GetChunkedFileResponseSchema
    has some); strings are left alone."""
    return _COMMENTS.sub(lambda m: m.group() if m.group().startswith('"') else "", text)


_FORMATS = jsonschema.FormatChecker(formats=())


@_FORMATS.checks("uri")
def _uri(value: Any) -> bool:
    # NJsonSchema 6.8: Uri.TryCreate(value, UriKind.Absolute). An empty string is not a URI, which is what
    # lets the schemas' `oneOf: [{format: uri}, {maxLength: 0}, {type: null}]` accept "".
    return not isinstance(value, str) or dotnet.is_absolute_uri(value)


@_FORMATS.checks("date-time")
def _date_time(value: Any) -> bool:
    # NJsonSchema 6.8: DateTime.TryParse(value).
    return not isinstance(value, str) or dotnet.parse_datetime(value) is not None


class Schemas:
    """The JSON schemas of JsonSchemas/*.json by file name without extension. They are draft-04 (NJsonSchema's
    JsonSchema4): `integer` excludes 1.0, and the `uri` and `date-time` formats are checked."""

    def __init__(self, directory: Path):
        self.directory = directory
        self._validators: dict[str, jsonschema.Draft4Validator] = {}

    def ids(self) -> set[str]:
        return {p.stem for p in self.directory.glob("*.json")}

    def validator(self, schema_id: str) -> jsonschema.Draft4Validator:
        if schema_id not in self._validators:
            path = self.directory / f"{schema_id}.json"
            if not path.is_file():
                raise ResourceError(f"Schema with ID '{schema_id}' not found.")
            try:
                schema = json.loads(_without_comments(path.read_text("utf-8-sig")))
            except ValueError as error:
                raise ResourceError(f"schema {path} is not JSON: {error}") from None
            self._validators[schema_id] = jsonschema.Draft4Validator(schema, format_checker=_FORMATS)
        return self._validators[schema_id]

    def errors(self, schema_id: str, value: Any) -> list[str]:
        """One message per failing keyword, as `Kind: #/path (detail)`, empty when the value conforms."""
        found = []
        errors = self.validator(schema_id).iter_errors(value)
        for error in sorted(errors, key=lambda e: [str(part) for part in e.absolute_path]):
            path = "#/" + "/".join(str(p) for p in error.absolute_path)
            found.append(f"{error.validator}: {path} ({_short(error.message)})")
        return found


def _short(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
