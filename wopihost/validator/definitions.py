"""The validator's test definitions (TestCases.xml) as plain data.

The file has Resources (named contents), PrereqCases (test cases other groups depend on) and TestGroups
(prerequisites by name, then test cases). A test case is a list of requests, each with its checks
("validators"), the state it saves from its response, and mutators that spoil its access token or proof;
cleanup requests follow. Everything here is read once and never changes while tests run; what the XML
cannot express (a missing name, an unknown element) is a DefinitionError, raised while loading, as the
validator's factories throw while parsing.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from . import dotnet

CATEGORIES = ("All", "WopiCore", "OfficeOnline", "OfficeNativeClient", "WopiCoauth")


class DefinitionError(ValueError):
    """The test definitions cannot be used as written."""


# ------------------------------------------------------------------------------------------ checks


@dataclass(frozen=True)
class NoException:
    """Added in front of every explicit <Validators> list: the request must have produced a response."""


@dataclass(frozen=True)
class ResponseCode:
    expected: int


@dataclass(frozen=True)
class ResponseHeader:
    header: str
    expected_value: str | None = None
    expected_state_key: str | None = None
    comparator: str = "="
    is_required: bool = False
    should_match: bool = True


@dataclass(frozen=True)
class LockMismatch:
    expected_lock: str | None


@dataclass(frozen=True)
class JsonProperty:
    kind: str  # BooleanProperty, IntegerProperty, LongProperty, StringProperty, ...
    name: str
    is_required: bool = False
    expected_value: str | None = None
    expected_state_key: str | None = None
    ends_with: str | None = None
    contains_value: str | None = None
    should_match: bool = True
    must_include_access_token: bool = False
    ignore_case: bool = False


@dataclass(frozen=True)
class JsonContent:
    properties: tuple[JsonProperty, ...]
    should_exist: bool = True


@dataclass(frozen=True)
class JsonSchema:
    schema_id: str


@dataclass(frozen=True)
class ResponseContent:
    resource_id: str | None
    expected_body: str | None


@dataclass(frozen=True)
class StreamExpectation:
    stream_id: str
    scheme: str
    expected_content: str | None
    expected_resource_id: str | None
    existing_content: str | None
    existing_resource_id: str | None


@dataclass(frozen=True)
class PropertyExpectation:
    name: str
    expected_value: str
    expected_retention: str
    should_be_returned: bool


@dataclass(frozen=True)
class Frames:
    schema_id: str
    expected_host_blobs_count: int | None
    streams: tuple[StreamExpectation, ...]
    properties: tuple[PropertyExpectation, ...]


@dataclass(frozen=True)
class AllOf:
    checks: tuple[Check, ...]


@dataclass(frozen=True)
class AnyOf:
    checks: tuple[Check, ...]


Check = (
    NoException
    | ResponseCode
    | ResponseHeader
    | LockMismatch
    | JsonContent
    | JsonSchema
    | ResponseContent
    | Frames
    | AllOf
    | AnyOf
)


# -------------------------------------------------------------------------------- requests, tests


@dataclass(frozen=True)
class StateEntry:
    name: str
    source: str | None
    from_header: bool


@dataclass(frozen=True)
class AccessTokenMutator:
    mutation: str | None  # None: a fresh GUID on every request


@dataclass(frozen=True)
class ProofKeyMutator:
    mutate_current: bool = False
    mutate_old: bool = False
    timestamp: int | None = None  # .NET ticks to sign with instead of now
    key_relation: str = "Synced"  # Synced, Ahead (client has new keys), Behind (client still has old keys)


Mutator = AccessTokenMutator | ProofKeyMutator


@dataclass(frozen=True)
class ContentFilter:
    scheme: str  # FullFile | Zip
    stream_id: str
    chunks_to_return: str  # All | None | LastZipChunk
    existing_content: str | None
    existing_resource_id: str | None


@dataclass(frozen=True)
class ContentStream:
    scheme: str
    stream_id: str
    new_content: str | None
    last_known_content: str | None
    new_resource_id: str | None
    last_known_resource_id: str | None


@dataclass(frozen=True)
class ContentProperty:
    retention: str  # DeleteOnContentChange | KeepOnContentChange
    name: str
    value: str


@dataclass(frozen=True)
class Request:
    """One request of a test case. `checks` is None when the XML gives no <Validators> (then only a 200 is
    expected); every attribute the validator's RequestFactory reads has a field, absent ones are None."""

    kind: str
    checks: tuple[Check, ...] | None = None
    state: tuple[StateEntry, ...] = ()
    mutators: tuple[Mutator, ...] = ()
    override_url: str | None = None
    lock: str | None = None
    new_lock: str | None = None
    old_lock: str | None = None
    lock_user_visible: bool | None = None
    resource_id: str | None = None
    name: str | None = None
    folder_name: str | None = None
    mode: str | None = None  # PutRelativeFileMode: Suggested, ExactName, Conflicting
    overwrite_relative: bool | None = None
    url_type: str | None = None
    file_extension_filter_list: str | None = None
    wopi_src: str | None = None
    request_body: str | None = None
    coauth_lock_type: str | None = None
    coauth_lock_metadata: str | None = None
    coauth_lock_metadata_as_body: str | None = None
    coauth_lock_id: str | None = None
    coauth_lock_expiration_timeout: int | None = None
    coauth_table_version: str | None = None
    coauth_table_version_state_key: str | None = None
    sequence_number: str | None = None
    sequence_number_state_key: str | None = None
    editors: str | None = None
    content_properties_to_return: tuple[str, ...] | None = None
    content_filters: tuple[ContentFilter, ...] | None = None
    content_properties: tuple[ContentProperty, ...] | None = None
    content_streams: tuple[ContentStream, ...] | None = None
    upload_session_token: str | None = None
    delay_seconds: int | None = None


@dataclass(frozen=True)
class TestCase:
    __test__ = False  # not a pytest class

    name: str
    category: str
    description: str
    requests: tuple[Request, ...]
    cleanup: tuple[Request, ...] = ()
    fail_message: str | None = None


@dataclass(frozen=True)
class Group:
    name: str
    has_delay: bool
    prereqs: tuple[str, ...]
    tests: tuple[TestCase, ...]


@dataclass(frozen=True)
class Resource:
    id: str
    name: str | None
    file_path: str | None


@dataclass
class Definitions:
    resources: dict[str, Resource] = field(default_factory=dict)
    prereqs: dict[str, TestCase] = field(default_factory=dict)
    groups: list[Group] = field(default_factory=list)

    def schema_ids(self) -> set[str]:
        """Every JSON schema a check names, so that a missing one is reported before anything runs."""
        found: set[str] = set()

        def visit(check: Check) -> None:
            if isinstance(check, (JsonSchema, Frames)):
                found.add(check.schema_id)
            elif isinstance(check, (AllOf, AnyOf)):
                for child in check.checks:
                    visit(child)

        tests = [*self.prereqs.values(), *(t for g in self.groups for t in g.tests)]
        for test in tests:
            for request in (*test.requests, *test.cleanup):
                for check in request.checks or ():
                    visit(check)
        return found


# ------------------------------------------------------------------------------------------ parsing

REQUEST_KINDS = frozenset(
    {
        "CheckFileInfo",
        "GetFile",
        "PutFile",
        "PutRelativeFile",
        "Lock",
        "Unlock",
        "RefreshLock",
        "UnlockAndRelock",
        "GetLock",
        "CheckEcosystem",
        "GetNewAccessToken",
        "GetRootContainer",
        "CheckContainerInfo",
        "EnumerateChildren",
        "EnumerateAncestors",
        "GetEcosystem",
        "CreateChildContainer",
        "CreateChildFile",
        "DeleteFile",
        "DeleteContainer",
        "RenameContainer",
        "RenameFile",
        "GetFromFileUrl",
        "GetShareUrl",
        "AddActivities",
        "PutUserInfo",
        "GetCoauthLock",
        "GetCoauthTable",
        "RefreshCoauthLock",
        "UnlockCoauthLock",
        "GetChunkedFile",
        "PutChunkedFile",
        "GetSequenceNumber",
        "Delay",
    }
)
PROPERTY_KINDS = frozenset(
    {
        "AbsoluteUrlProperty",
        "ArrayProperty",
        "ArrayLengthProperty",
        "BooleanProperty",
        "IntegerProperty",
        "LongProperty",
        "ResponseBodyProperty",
        "StringRegexProperty",
        "StringProperty",
    }
)
_MODES = {"conflicting": "Conflicting", "suggested": "Suggested", "exactname": "ExactName", "unknown": None}
_LOCK_TYPES = {"coauth": "Coauth", "coauthexclusive": "CoauthExclusive", "none": "None"}
_SCHEMES = {"fullfile": "FullFile", "zip": "Zip"}
_CHUNKS_TO_RETURN = {"all": "All", "none": "None", "lastzipchunk": "LastZipChunk"}
_RETENTIONS = {"deleteoncontentchange": "DeleteOnContentChange", "keeponcontentchange": "KeepOnContentChange"}


def load(path: str | Path) -> Definitions:
    """Parse a TestCases.xml file."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as error:
        raise DefinitionError(f"cannot read {path}: {error}") from None
    return parse(root)


def parse(root: ET.Element) -> Definitions:
    definitions = Definitions()
    resources = root.find("Resources")
    for element in resources.findall("File") if resources is not None else ():
        resource = Resource(_attr(element, "Id") or "", _attr(element, "Name"), _attr(element, "FilePath"))
        if resource.id in definitions.resources:
            raise DefinitionError(f"resource {resource.id!r} is defined twice")
        definitions.resources[resource.id] = resource
    prereqs = root.find("PrereqCases")
    for element in prereqs.findall("TestCase") if prereqs is not None else ():
        test = _test_case(element)
        if test.name in definitions.prereqs:
            raise DefinitionError(f"prerequisite {test.name!r} is defined twice")
        definitions.prereqs[test.name] = test
    for element in root.findall("TestGroup"):
        names = element.find("PrereqTests")
        cases = element.find("TestCases")
        has_delay = _attr(element, "HasDelay")
        definitions.groups.append(
            Group(
                name=_attr(element, "Name") or "",
                has_delay=_xml_bool(has_delay, "HasDelay") if has_delay is not None else False,
                prereqs=tuple((p.text or "") for p in names.findall("PrereqTest")) if names is not None else (),
                tests=tuple(_test_case(t) for t in cases.findall("TestCase")) if cases is not None else (),
            )
        )
    return definitions


def condense(text: str | None) -> str:
    """The validator's CondenseMultiLineString: lines trimmed, single line breaks become spaces, runs of
    blank lines one line break."""
    if not text:
        return ""
    text = re.sub(r"^[ \t]+|[ \t]+$", "", text.strip(), flags=re.MULTILINE)
    text = re.sub(r"(\r\n){2,}|\n{2,}", "\0", text)
    text = re.sub(r"(\r\n)+|\n+", " ", text)
    return text.replace("\0", "\n")


def _test_case(element: ET.Element) -> TestCase:
    name = _attr(element, "Name")
    if not name:
        raise DefinitionError("a TestCase has no Name")
    category = _attr(element, "Category")
    if not category:
        raise DefinitionError(f"The category of {name} TestCase is empty")
    canonical = {c.lower(): c for c in CATEGORIES}.get(category.strip().lower())
    if canonical is None:
        raise DefinitionError(f"The category of {name} TestCase is invalid")
    requests = element.find("Requests")
    parsed = tuple(_request(r, name) for r in requests) if requests is not None else ()
    if not parsed:
        raise DefinitionError(f"TestCase {name} has to have at least one request")
    cleanup = element.find("CleanupRequests")
    description = element.find("Description")
    return TestCase(
        name=name,
        category=canonical,
        description=condense("".join(description.itertext()) if description is not None else ""),
        requests=parsed,
        cleanup=tuple(_request(r, name) for r in cleanup) if cleanup is not None else (),
        fail_message=_attr(element, "FailMessage"),
    )


def _request(element: ET.Element, test: str) -> Request:
    kind = element.tag
    if kind not in REQUEST_KINDS:
        raise DefinitionError(f"{test}: Unknown request: {kind!r}")
    where = f"{test}/{kind}"
    validators = element.find("Validators")
    saved = element.find("SaveState")
    mutators = element.find("Mutators")
    body = element.find("RequestBody")
    body_text = "".join(body.itertext()) if body is not None else ""
    a = element.attrib

    def flag(name: str) -> bool | None:
        return _xml_bool(a[name], f"{where} {name}") if name in a else None

    def unsigned(name: str) -> int | None:
        text = a.get(name)
        if not text:
            return None
        try:
            return dotnet.parse_integer(text, dotnet.UINT32)
        except ValueError:
            raise DefinitionError(f"{where}: {name} expected to be uint, not {text!r}") from None

    def choice(name: str, table: dict, spelled: str):
        """The attribute's value from `table` (by its name, ignoring case), or as given when absent."""
        text = a.get(name)
        if not text:
            return text
        if text.strip().lower() not in table:
            raise DefinitionError(f"{where}: {name} {text!r} is not {spelled}")
        return table[text.strip().lower()]

    mode = choice("PutRelativeFileMode", _MODES, "Suggested, ExactName or Conflicting")
    lock_type = choice("CoauthLockType", _LOCK_TYPES, "Coauth, CoauthExclusive or None")
    session = element.find("UploadSessionTokenToCommit")

    request = Request(
        kind=kind,
        checks=(NoException(), *(_check(v, where) for v in validators)) if validators is not None else None,
        state=tuple(_state(s) for s in saved) if saved is not None else (),
        mutators=tuple(_mutator(m, where) for m in mutators) if mutators is not None else (),
        override_url=a.get("OverrideUrl"),
        lock=a.get("Lock"),
        new_lock=a.get("NewLock"),
        old_lock=a.get("OldLock"),
        lock_user_visible=flag("LockUserVisible"),
        resource_id=a.get("ResourceId"),
        name=a.get("Name"),
        folder_name=a.get("FolderName"),
        mode=mode or None,
        overwrite_relative=flag("OverwriteRelative"),
        url_type=a.get("UrlType"),
        file_extension_filter_list=a.get("FileExtensionFilterList"),
        wopi_src=a.get("WopiSrc"),
        request_body=body_text or None,
        coauth_lock_type=lock_type or None,
        coauth_lock_metadata=a.get("CoauthLockMetadata"),
        coauth_lock_metadata_as_body=a.get("CoauthLockMetadataAsBody"),
        coauth_lock_id=a.get("CoauthLockId"),
        coauth_lock_expiration_timeout=unsigned("CoauthLockExpirationTimeout"),
        coauth_table_version=a.get("CoauthTableVersion"),
        coauth_table_version_state_key=a.get("CoauthTableVersionStateKey"),
        sequence_number=a.get("SequenceNumber"),
        sequence_number_state_key=a.get("SequenceNumberStateKey"),
        editors=a.get("Editors"),
        content_properties_to_return=_children(element, "ContentPropertiesToReturn", _property_to_return, where),
        content_filters=_children(element, "ContentFilters", _content_filter, where),
        content_properties=_children(element, "ContentProperties", _content_property, where),
        content_streams=_children(element, "ContentStreams", _content_stream, where),
        upload_session_token=session.get("Value") if session is not None else None,
        delay_seconds=unsigned("DelayTimeInSeconds"),
    )
    # What the validator's request constructors refuse.
    if kind == "PutRelativeFile" and not request.name:
        raise DefinitionError(f"{where}: Requested name for a PutRelativeFile Wopi request cannot be null or empty")
    if kind in ("PutUserInfo", "AddActivities") and not (request.request_body or "").strip():
        raise DefinitionError(f"{where}: No RequestBody specified for {kind} operation")
    return request


def _children(element: ET.Element, tag: str, parse_one, where: str):
    container = element.find(tag)
    return tuple(parse_one(child, where) for child in container) if container is not None else None


def _property_to_return(element: ET.Element, where: str) -> str:
    value = element.get("Value")
    if not value or not value.strip():
        raise DefinitionError(f"{where}: GetChunkedFile ContentPropertyToReturn 'Value' parameter is invalid")
    return value


def _enum(value: str | None, table: dict[str, str], what: str, where: str) -> str:
    if not value or not value.strip() or value.strip().lower() not in table:
        raise DefinitionError(f"{where}: {what} {value!r} is invalid")
    return table[value.strip().lower()]


def _content_filter(element: ET.Element, where: str) -> ContentFilter:
    scheme = _enum(element.get("ChunkingScheme"), _SCHEMES, "ChunkingScheme", where)
    chunks = _enum(element.get("ChunksToReturn"), _CHUNKS_TO_RETURN, "ChunksToReturn", where)
    stream_id = element.get("StreamId")
    if not stream_id or not stream_id.strip():
        raise DefinitionError(f"{where}: ContentFilter StreamId is invalid")
    content, resource = element.get("AlreadyExistingContent"), element.get("AlreadyExistingContentResourceId")
    _one_source(scheme, content, resource, "AlreadyExistingContent", where)
    return ContentFilter(scheme, stream_id, chunks, content, resource)


def _content_stream(element: ET.Element, where: str) -> ContentStream:
    scheme = _enum(element.get("ChunkingScheme"), _SCHEMES, "ChunkingScheme", where)
    stream_id = element.get("StreamId")
    if not stream_id or not stream_id.strip():
        raise DefinitionError(f"{where}: ContentStream StreamId is invalid")
    new, known = element.get("NewContent"), element.get("LastKnownHostContent")
    new_id, known_id = element.get("NewContentResourceId"), element.get("LastKnownHostContentResourceId")
    _one_source(scheme, new, new_id, "NewContent", where)
    _one_source(scheme, known, known_id, "LastKnownHostContent", where)
    return ContentStream(scheme, stream_id, new, known, new_id, known_id)


def _one_source(scheme: str, text: str | None, resource_id: str | None, what: str, where: str) -> None:
    """FullFile streams are given as text, Zip streams as a resource; the validator refuses the other."""
    if scheme == "FullFile" and (text is None or resource_id is not None):
        raise DefinitionError(f"{where}: a FullFile {what} needs text and no resource id")
    if scheme == "Zip" and (resource_id is None or text is not None):
        raise DefinitionError(f"{where}: a Zip {what} needs a resource id and no text")


def _content_property(element: ET.Element, where: str) -> ContentProperty:
    retention = _enum(element.get("Retention"), _RETENTIONS, "ContentProperty Retention", where)
    name, value = element.get("Name"), element.get("Value")
    if not name or not name.strip() or not value or not value.strip():
        raise DefinitionError(f"{where}: ContentProperty needs a Name and a Value")
    return ContentProperty(retention, name, value)


def _state(element: ET.Element) -> StateEntry:
    kind = (element.get("SourceType") or "").strip().lower()
    return StateEntry(element.get("Name") or "", element.get("Source"), kind == "header")


def _mutator(element: ET.Element, where: str) -> Mutator:
    if element.tag == "AccessToken":
        return AccessTokenMutator(element.get("Mutation"))
    if element.tag == "ProofKey":
        a = element.attrib
        return ProofKeyMutator(
            mutate_current=_xml_bool(a["MutateCurrent"], where) if "MutateCurrent" in a else False,
            mutate_old=_xml_bool(a["MutateOld"], where) if "MutateOld" in a else False,
            timestamp=dotnet.datetime_ticks(a.get("Timestamp")),
            key_relation=a.get("KeyRelation") or "Synced",
        )
    raise DefinitionError(f"{where}: Unknown mutator: {element.tag!r}")


def _check(element: ET.Element, where: str) -> Check:
    tag, a = element.tag, element.attrib
    if tag == "And":
        return AllOf(tuple(_check(child, where) for child in element))
    if tag == "Or":
        return AnyOf(tuple(_check(child, where) for child in element))
    if tag == "ResponseCodeValidator":
        return ResponseCode(_xml_int(a.get("ExpectedCode"), f"{where} ExpectedCode"))
    if tag == "ResponseHeaderValidator":
        if not a.get("Header"):
            raise DefinitionError(f"{where}: ResponseHeaderValidator needs a Header")
        return ResponseHeader(
            header=a["Header"],
            expected_value=a.get("ExpectedValue"),
            expected_state_key=a.get("ExpectedStateKey"),
            comparator=(a.get("Comparator") or "").strip() or "=",
            is_required=_xml_bool(a["IsRequired"], where) if "IsRequired" in a else False,
            should_match=_xml_bool(a["ShouldMatch"], where) if "ShouldMatch" in a else True,
        )
    if tag == "LockMismatchValidator":
        return LockMismatch(a.get("ExpectedLock"))
    if tag == "JsonResponseContentValidator":
        return JsonContent(
            tuple(_property(child, where) for child in element),
            _xml_bool(a["ShouldExist"], where) if "ShouldExist" in a else True,
        )
    if tag == "JsonSchemaValidator":
        if not a.get("Schema"):
            raise DefinitionError(f"{where}: JsonSchemaValidator needs a Schema")
        return JsonSchema(a["Schema"])
    if tag == "ResponseContentValidator":
        if a.get("ExpectedResourceId") and a.get("ExpectedBodyContent"):
            raise DefinitionError(f"{where}: Both expectedBodyContent and resourceId are not null/empty.")
        return ResponseContent(a.get("ExpectedResourceId"), a.get("ExpectedBodyContent"))
    if tag == "FramesValidator":
        return _frames(element, where)
    raise DefinitionError(f"{where}: Unknown validator: {tag!r}")


def _property(element: ET.Element, where: str) -> JsonProperty:
    tag, a = element.tag, element.attrib
    if tag not in PROPERTY_KINDS:
        raise DefinitionError(f"{where}: Unknown property type: {tag!r}")
    name = a.get("Name")
    if name is None:
        raise DefinitionError(f"{where}: {tag} needs a Name")
    expected = a.get("ExpectedValue")
    # The typed validators convert ExpectedValue when the XML is read.
    if expected is not None:
        if tag == "BooleanProperty":
            _xml_bool(expected, f"{where} {name}")
        elif tag in ("IntegerProperty", "ArrayLengthProperty"):
            _xml_int(expected, f"{where} {name}")
        elif tag == "LongProperty":
            _xml_int(expected, f"{where} {name}", dotnet.INT64)
    if tag == "StringRegexProperty":
        if expected is None:
            raise DefinitionError(f"{where}: StringRegexProperty {name} needs an ExpectedValue")
        try:
            re.compile(expected)
        except re.error as error:
            raise DefinitionError(f"{where}: StringRegexProperty {name}: {error}") from None

    def flag(attr: str, default: bool) -> bool:
        return _xml_bool(a[attr], f"{where} {attr}") if attr in a else default

    return JsonProperty(
        kind=tag,
        name=name,
        is_required=flag("IsRequired", False),
        expected_value=expected,
        expected_state_key=a.get("ExpectedStateKey"),
        ends_with=a.get("EndsWith"),
        contains_value=a.get("ContainsValue"),
        should_match=flag("ShouldMatch", True),
        must_include_access_token=flag("MustIncludeAccessToken", False),
        ignore_case=flag("IgnoreCase", False),
    )


def _frames(element: ET.Element, where: str) -> Frames:
    schema = element.get("MessageJsonPayloadSchema")
    if not schema:
        raise DefinitionError(f"{where}: FramesValidator needs a MessageJsonPayloadSchema")
    count = element.get("ExpectedHostBlobsCount")
    streams, properties = [], []
    for child in element:
        tag = child.tag.lower()
        if tag == "contentstreamvalidator":
            stream_id = child.get("StreamId")
            if not stream_id or not stream_id.strip():
                raise DefinitionError(f"{where}: ContentStreamValidator cannot have empty streamId")
            _enum(child.get("ExpectedChunkingScheme"), _SCHEMES, "ExpectedChunkingScheme", where)
            expectation = StreamExpectation(
                stream_id,
                cast(str, child.get("ExpectedChunkingScheme")),
                child.get("ExpectedContent"),  # _enum: set
                child.get("ExpectedContentResourceId"),
                child.get("AlreadyExistingContent"),
                child.get("AlreadyExistingContentResourceId"),
            )
            _check_stream_expectation(expectation, where)
            streams.append(expectation)
        elif tag == "contentpropertyvalidator":
            name = child.get("Name")
            if not name or not name.strip():
                raise DefinitionError(f"{where}: ContentPropertyValidator cannot have empty name")
            returned = child.get("ShouldBeReturned")
            properties.append(
                PropertyExpectation(
                    name,
                    child.get("ExpectedValue") or "",
                    child.get("ExpectedRetention") or "",
                    _xml_bool(returned, where) if returned is not None else True,
                )
            )
    return Frames(
        schema,
        _xml_int(count, f"{where} ExpectedHostBlobsCount") if count is not None else None,
        tuple(streams),
        tuple(properties),
    )


def _check_stream_expectation(e: StreamExpectation, where: str) -> None:
    """The validator's ContentStreamValidator parameter rules: both sides given as text (FullFile) or as
    resources (Zip), or neither (then only the chunking scheme is checked). Its case-sensitive comparison
    of the scheme name means a differently-cased "zip" is checked by neither rule."""
    if e.scheme == "FullFile" and not (e.expected_content is None and e.existing_content is None):
        if e.expected_content is None or e.existing_content is None:
            raise DefinitionError(
                f"{where}: FullFile ContentStreamValidator needs ExpectedContent and AlreadyExistingContent"
            )
        if e.expected_resource_id is not None or e.existing_resource_id is not None:
            raise DefinitionError(f"{where}: FullFile ContentStreamValidator takes no resource ids")
    elif e.scheme == "Zip" and not (e.expected_resource_id is None and e.existing_resource_id is None):
        if e.expected_resource_id is None or e.existing_resource_id is None:
            raise DefinitionError(
                f"{where}: Zip ContentStreamValidator needs ExpectedContentResourceId and "
                "AlreadyExistingContentResourceId"
            )
        if e.expected_content is not None or e.existing_content is not None:
            raise DefinitionError(f"{where}: Zip ContentStreamValidator takes no text content")


def _attr(element: ET.Element, name: str) -> str | None:
    return element.get(name)


def _xml_bool(text: str, where: str) -> bool:
    try:
        return dotnet.xml_bool(text)
    except ValueError:
        raise DefinitionError(f"{where}: {text!r} is not an XML boolean (true, false, 1 or 0)") from None


def _xml_int(text: str | None, where: str, bounds: tuple[int, int] = dotnet.INT32) -> int:
    try:
        return dotnet.parse_integer(text, bounds)
    except ValueError:
        raise DefinitionError(f"{where}: {text!r} is not an integer") from None
