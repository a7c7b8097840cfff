"""wopihost.validator, the rerun of Microsoft's WOPI validator, on test definitions of our own.

Each test writes a small TestCases.xml (with a JSON schema and a Zip-chunked resource of its own, laid out as
in a checkout of wopi-validator-core) and runs it against a real wopihost server that requires proof keys
(so every request the engine sends must be signed with the keys of the discovery it wrote) and serves CSPP
Plus. The definitions exercise the validator's semantics: prerequisites that skip, state saved from one
response and used by the next request, each check passing and failing, cleanup after a failure, UTF-7 names
as .NET writes them, mutators, categories and delay groups.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import os
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests as http

from wopihost.discovery import parse_discovery
from wopihost.localserver import LocalServer, free_port
from wopihost.proof import raw_query_value, verify
from wopihost.validator import (
    ERROR,
    FAIL,
    PASS,
    SKIP,
    Layout,
    ProofSigner,
    Resources,
    Runner,
    Schemas,
    Target,
    checks,
    dotnet,
    load,
)
from wopihost.validator.__main__ import main
from wopihost.validator.definitions import DefinitionError, ProofKeyMutator
from wopihost.validator.httpclient import KEEP_LIMIT
from wopihost.validator.requests import OFFICE_NATIVE_CLIENT_USER_AGENT, build
from wopihost.validator.state import State
from wopihost.validator.transport import EXCEPTION_STATUS, HttpCall, Transport

from .test_replay import answering_host, interrupted, silent_host, slow_reading_host, trickling_host

pytestmark = pytest.mark.e2e

# A CheckFileInfo schema of our own: the required five, and a URL that may be empty (the validator's
# schemas say so with oneOf, which only works when the "uri" format is checked).
MINI_SCHEMA = {
    "$schema": "http://json-schema.org/draft-04/schema#",
    "type": "object",
    "required": ["BaseFileName", "OwnerId", "Size", "UserId", "Version"],
    "properties": {
        "BaseFileName": {"type": "string"},
        "Size": {"type": "integer"},
        "CloseUrl": {"oneOf": [{"type": "string", "format": "uri"}, {"type": "string", "maxLength": 0}]},
    },
}
STRICT_SCHEMA = {"type": "object", "required": ["NoSuchProperty"]}
# The frames check insists on this schema name; this one is ours, and small.
FRAMES_SCHEMA = """{
  // comments are allowed, as Newtonsoft allows them
  "type": "object",
  "required": ["ContentProperties", "Signatures"],
  "properties": {"Signatures": {"type": "array", "items": {"type": "object", "required": ["StreamId"]}}}
}"""
ZIP_CONTENT = b"PK-first-chunk|second chunk of the tiny stream|third"
ZIP_OFFSETS = "0\n15\n47\n"

RESOURCES = r"""
  <Resources>
    <File Id="Doc" Name="doc.wopitest" FilePath="Here\" />
    <File Id="Other" Name="other.wopitest" FilePath="There\" />
    <File Id="ZeroByteFile" Name="ZeroByteFile.wopitest" FilePath="x" />
    <File Id="ZeroByteOfficeDocument" Name="" FilePath="" />
    <File Id="Tiny" Name="ChunkIds.txt"
          FilePath="Microsoft.Office.WopiValidator.Core.Resources.ZipChunking.Tiny.MainContent." />
  </Resources>"""


def suite(groups: str, prereqs: str = "") -> str:
    return (
        f'<?xml version="1.0" encoding="utf-8"?>\n<WopiValidation>{RESOURCES}\n'
        f"<PrereqCases>{prereqs}</PrereqCases>\n{groups}\n</WopiValidation>\n"
    )


def group(name: str, cases: str, prereqs: tuple[str, ...] = (), delay: bool = False) -> str:
    names = "".join(f"<PrereqTest>{p}</PrereqTest>" for p in prereqs)
    attrs = ' HasDelay="true"' if delay else ""
    return (
        f'<TestGroup Name="{name}"{attrs}><PrereqTests>{names}</PrereqTests><TestCases>{cases}</TestCases></TestGroup>'
    )


def case(name: str, requests: str, cleanup: str = "", category: str = "WopiCore") -> str:
    cleanup = f"<CleanupRequests>{cleanup}</CleanupRequests>" if cleanup else ""
    return (
        f'<TestCase Name="{name}" Category="{category}"><Description>{name}</Description>'
        f"<Requests>{requests}</Requests>{cleanup}</TestCase>"
    )


def checking(request: str, validators: str, attrs: str = "", mutators: str = "") -> str:
    mutators = f"<Mutators>{mutators}</Mutators>" if mutators else ""
    return f"<{request} {attrs}>{mutators}<Validators>{validators}</Validators></{request}>"


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> ProofSigner:
    return ProofSigner.load_or_create(tmp_path_factory.mktemp("proof-keys"))


@pytest.fixture(scope="module")
def server(tmp_path_factory, keys):
    server = LocalServer.start(
        tmp_path_factory.mktemp("validator-host"),
        extra_env={
            "WOPIHOST_DISCOVERY_URL": str(keys.discovery_path),
            "WOPIHOST_PROOF_KEYS": "require",
            "WOPIHOST_CSPP_PLUS": "on",
        },
    )
    yield server
    server.stop()
    assert "Traceback" not in server.log_text(), server.log_text()


@dataclass(frozen=True)
class Document(Target):
    name: str = ""


_numbers = itertools.count(1)


def new_document(server: LocalServer, directory: Path) -> Document:
    """A fresh empty .wopitest file (named Test-<n>.wopitest: they share a folder) and a token for it."""
    name = f"Test-{next(_numbers)}.wopitest"
    path = directory / name
    path.write_bytes(b"")
    file_id = server.add_file(path, name)["id"]
    issued = json.loads(server.cli("token", "issue", file_id, "--user", "alice", "--json"))
    return Document(
        f"{server.base}/wopi/files/{file_id}", issued["access_token"], int(issued["access_token_ttl"]), name
    )


@pytest.fixture
def document(server, tmp_path) -> Document:
    return new_document(server, tmp_path)


@pytest.fixture(scope="module")
def shared_document(server, tmp_path_factory) -> Document:
    """One document for the checks that leave it as they found it."""
    return new_document(server, tmp_path_factory.mktemp("shared"))


def write_checkout(root: Path, xml: str) -> Path:
    """TestCases.xml, JsonSchemas/ and Resources/ as the validator's files would be laid out."""
    (root / "JsonSchemas").mkdir(parents=True, exist_ok=True)
    (root / "JsonSchemas" / "MiniCheckFileInfo.json").write_text("\ufeff" + json.dumps(MINI_SCHEMA), "utf-8")
    (root / "JsonSchemas" / "Strict.json").write_text(json.dumps(STRICT_SCHEMA), "utf-8")
    (root / "JsonSchemas" / "GetChunkedFileResponseSchema.json").write_text(FRAMES_SCHEMA, "utf-8")
    tiny = root / "Resources" / "ZipChunking" / "Tiny" / "MainContent"
    tiny.mkdir(parents=True, exist_ok=True)
    (tiny / "FileStream").write_bytes(ZIP_CONTENT)
    (tiny / "ChunkIds.txt").write_text(ZIP_OFFSETS)
    path = root / "TestCases.xml"
    path.write_text(xml, "utf-8")
    return path


@pytest.fixture
def engine(tmp_path, keys):
    """run(xml, target, **options) -> {name: TestResult}."""
    transports = []

    def run(xml: str, target: Target, group_name: str | None = None, name: str | None = None, **options):
        path = write_checkout(tmp_path / "checkout", xml)
        layout = Layout.find(path)
        definitions = load(path)
        transport = Transport(timeout=30)
        transports.append(transport)
        runner = Runner(
            definitions,
            Resources(layout, definitions.resources),
            Schemas(layout.schemas),
            target,
            keys,
            transport,
            **options,
        )
        return {result.name: result for result in runner.run(group_name, name)}

    yield run
    for transport in transports:
        transport.close()


def get_lock(target: Target, keys: ProofSigner) -> str:
    """GetLock outside the engine (signed, as the host requires)."""
    url = f"{target.wopi_src}?access_token={target.token}"
    headers = {"X-WOPI-Override": "GET_LOCK", **keys.headers(target.token, url)}
    return http.post(url, headers=headers).headers["X-WOPI-Lock"]


# ------------------------------------------------------------------------------------ .NET rules


def test_utf7_is_dotnets():
    assert dotnet.utf7("madeup_name.wopitestx") == "madeup+AF8-name.wopitestx"  # Python's codec keeps "_"
    assert dotnet.utf7("a+b") == "a+-b"
    assert dotnet.utf7("é.docx") == "+AOk-.docx"
    assert dotnet.utf7("x!") == "x+ACE-"  # a run at the end is closed with "-"
    assert dotnet.utf7("日本") == "+ZeVnLA-"
    assert dotnet.utf7_unescaped("a b_c") == "a+b+AF8-c"  # the URL round trip turns a space into "+"


def test_a_port_of_digits_that_are_not_ascii_is_no_uri():
    assert not dotnet.is_absolute_uri("http://host:\u00b2/wopi/files/x")  # str.isdigit takes "²", int does not
    assert dotnet.is_absolute_uri("http://host:8080/wopi/files/x")


@pytest.mark.parametrize("port", ["99999", "8o80"])
def test_a_url_whose_port_is_not_one_is_refused_not_sent_to_the_default_port(port):
    with pytest.raises(ValueError):
        dotnet.absolute_uri(f"http://127.0.0.1:{port}/wopi/files/x")  # not http://127.0.0.1/wopi/files/x
    assert dotnet.absolute_uri("HTTP://Host:80/wopi/files/x") == "http://host/wopi/files/x"


def test_relaxed_json_and_query_helpers():
    assert dotnet.relaxed_json("[{Id:'a', N: 2, T: true}, {}]") == [{"Id": "a", "N": 2, "T": True}, {}]
    assert dotnet.query_value("http://h/p?x=1&ACCESS_TOKEN=a%2Bb+c#f", "access_token") == "a+b c"
    assert (
        dotnet.replace_query_value("http://h/p?access_token=a&b=1", "access_token", "x y")
        == "http://h/p?access_token=x+y&b=1"
    )
    assert dotnet.url_key_value_encode("a/b+c") == "a%2Fb%2Bc"


def test_definitions_refuse_what_the_validator_refuses(tmp_path):
    bad = suite(group("G", case("T", '<PutRelativeFile PutRelativeFileMode="Suggested" ResourceId="Doc" />')))
    with pytest.raises(DefinitionError, match="PutRelativeFile"):
        load(write_checkout(tmp_path, bad))
    with pytest.raises(DefinitionError, match="Unknown request"):
        load(write_checkout(tmp_path, suite(group("G", case("T", "<CheckFile />")))))
    with pytest.raises(DefinitionError, match="category"):
        load(write_checkout(tmp_path, suite(group("G", case("T", "<CheckFileInfo />", category="Nope")))))


def test_zip_resource_is_cut_at_the_listed_offsets(tmp_path):
    path = write_checkout(tmp_path, suite(""))
    resources = Resources(Layout.find(path), load(path).resources)
    assert resources.zip_chunks("Tiny") == [ZIP_CONTENT[:15], ZIP_CONTENT[15:47], ZIP_CONTENT[47:]]
    assert resources.zip_chunks("ZeroByteOfficeDocument") == []
    assert resources.content("Doc") == b"DocHere\\doc.wopitest"  # what the validator puts in PutFile
    assert resources.content("ZeroByteFile") == b""


# ---------------------------------------------------------------------------- signing and proofs


def test_runs_that_start_together_on_no_keys_sign_with_the_keys_discovery_publishes(tmp_path):
    """Two runs (a validator and a replay in one CI job) that start on an empty key directory: each makes keys,
    the first to write them wins, and both sign with those, the keys discovery.xml publishes."""
    at = time.time() + 1.5  # after the interpreters have started: the runs make their keys at once
    script = (
        "import sys, time; from wopihost.validator.signing import ProofSigner; "
        f"time.sleep(max(0.0, {at} - time.time())); "
        "signer = ProofSigner.load_or_create(sys.argv[1]); "
        "print(signer.current.public_key().public_numbers().n, signer.old.public_key().public_numbers().n)"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)}
    runs = [
        subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, env=env, text=True)
        for _ in range(4)
    ]
    keys = {run.communicate(timeout=60)[0] for run in runs}
    assert len(keys) == 1, "each run signs with keys of its own"
    published = parse_discovery((tmp_path / "discovery.xml").read_bytes()).proof_keys
    current, old = keys.pop().split()
    assert (published.current.public_numbers().n, published.old.public_numbers().n) == (int(current), int(old))
    assert sorted(path.name for path in tmp_path.iterdir()) == ["discovery.xml", "proof-key-old.pem", "proof-key.pem"]


def test_a_signed_request_verifies_with_wopihost_proof(tmp_path, keys, document, server):
    path = write_checkout(tmp_path, suite(""))
    definitions = load(path)
    request = load(write_checkout(tmp_path, suite(group("G", case("T", "<CheckFileInfo />"))))).groups[0].tests[0]
    call = build(
        request.requests[0],
        document,
        State.initial(document.token, document.wopi_src),
        Resources(Layout.find(path), definitions.resources),
        keys.headers,
    )
    prepared = http.Request(call.method, call.url, headers=call.headers).prepare()
    headers = call.sign(prepared.url)
    proof_keys = parse_discovery(keys.discovery_path.read_bytes()).proof_keys
    verdict = verify(
        proof_keys,
        access_token_raw=raw_query_value(prepared.url),
        url=prepared.url,
        timestamp_header=headers["X-WOPI-TimeStamp"],
        proof=headers["X-WOPI-Proof"],
        proof_old=headers["X-WOPI-ProofOld"],
    )
    assert verdict.ok and verdict.combination == "proof/current", verdict.reason
    assert call.headers["Authorization"] == f"Bearer {document.token}"
    assert "access_token_ttl=" in prepared.url
    # the old key's signature alone, where the current one should be, is refused; as the validator wants
    behind = keys.headers(document.token, prepared.url, ProofKeyMutator(mutate_current=True))
    assert not verify(
        proof_keys,
        access_token_raw=document.token,
        url=prepared.url,
        timestamp_header=behind["X-WOPI-TimeStamp"],
        proof=behind["X-WOPI-Proof"],
        proof_old=behind["X-WOPI-ProofOld"],
    ).ok


def test_proof_key_and_access_token_mutators(engine, document):
    refused = '<ResponseCodeValidator ExpectedCode="500" />'
    unknown = '<ResponseCodeValidator ExpectedCode="401" />'
    accepted = '<ResponseCodeValidator ExpectedCode="200" />'
    cases = "".join(
        [
            case("Signed", "<CheckFileInfo />"),
            case("OldKeyOnly", checking("CheckFileInfo", refused, mutators='<ProofKey MutateCurrent="true" />')),
            case("RotatedClient", checking("CheckFileInfo", accepted, mutators='<ProofKey KeyRelation="Ahead" />')),
            case("HostBehind", checking("CheckFileInfo", accepted, mutators='<ProofKey KeyRelation="Behind" />')),
            case(
                "StaleTimestamp",
                checking("CheckFileInfo", refused, mutators='<ProofKey Timestamp="2015-08-17T00:00:00Z" />'),
            ),
            case("BadToken", checking("CheckFileInfo", unknown, mutators='<AccessToken Mutation="INVALID" />')),
            case("RandomToken", checking("CheckFileInfo", unknown, mutators="<AccessToken />")),
        ]
    )
    results = engine(suite(group("Proofs", cases)), document)
    assert {name: r.status for name, r in results.items()} == dict.fromkeys(results, PASS), {
        name: r.reason for name, r in results.items()
    }


# ------------------------------------------------------------------------- prerequisites, state

PREREQS = """
  <TestCase Name="IsWopiTest" Category="WopiCore"><Requests><CheckFileInfo><Validators>
    <JsonResponseContentValidator><StringProperty Name="BaseFileName" EndsWith=".WOPITEST" IgnoreCase="true"
      IsRequired="true" /></JsonResponseContentValidator></Validators></CheckFileInfo></Requests></TestCase>
  <TestCase Name="HasTeleporter" Category="WopiCore"><Requests><CheckFileInfo><Validators>
    <JsonResponseContentValidator><BooleanProperty Name="SupportsTeleporting" ExpectedValue="true"
      IsRequired="true" /></JsonResponseContentValidator></Validators></CheckFileInfo></Requests></TestCase>"""


def test_a_failing_prerequisite_skips_the_group(engine, document):
    xml = suite(
        group("Runs", case("Plain", "<CheckFileInfo />"), ("IsWopiTest",))
        + group(
            "Skipped",
            case("Teleport", "<CheckFileInfo />") + case("Again", "<Lock Lock='x' />"),
            ("IsWopiTest", "HasTeleporter"),
        ),
        PREREQS,
    )
    results = engine(xml, document)
    assert results["Plain"].status == PASS
    for name in ("Teleport", "Again"):
        assert results[name].status == SKIP
        assert results[name].prereq == "HasTeleporter"
        assert results[name].reason == (
            "prerequisite HasTeleporter failed: Incorrect value for "
            "'SupportsTeleporting' property. Required property missing"
        )
    assert len(results["Teleport"].requests) == 1  # the failing prerequisite's own request


def test_a_failing_setup_prerequisite_is_an_error(engine, document, keys):
    """WopiValidatorPrereq, first in every group of Microsoft's definitions, only checks that the document can
    be reached: its failure (here a wrong token) is no verdict on what the host offers."""
    gate = PREREQS.replace('Name="IsWopiTest"', 'Name="WopiValidatorPrereq"')
    xml = suite(group("Locks", case("Lock", "<Lock Lock='never' />"), ("WopiValidatorPrereq",)), gate)
    result = engine(xml, replace(document, token="not-a-token"))["Lock"]
    assert result.status == ERROR and result.prereq == "WopiValidatorPrereq"
    assert (
        result.reason
        == "prerequisite WopiValidatorPrereq failed: Response body should exist, but couldn't read resource content."
    )
    assert get_lock(document, keys) == ""


def test_a_prerequisite_without_an_answer_is_an_error(engine, document):
    down = replace(document, wopi_src=f"http://127.0.0.1:{free_port()}/wopi/files/nothing-listens")
    result = engine(
        suite(group("Teleports", case("Teleport", "<CheckFileInfo />"), ("HasTeleporter",)), PREREQS), down
    )["Teleport"]
    assert result.status == ERROR and result.prereq == "HasTeleporter"
    assert "Connection refused" in result.reason


def test_skipped_tests_do_not_run(engine, document, keys):
    xml = suite(group("Skipped", case("Locks", "<Lock Lock='never' />"), ("HasTeleporter",)), PREREQS)
    assert engine(xml, document)["Locks"].status == SKIP
    assert get_lock(document, keys) == ""


def test_state_from_a_json_body_and_a_header(engine, document):
    """PutRelativeFile's Url (JSON) becomes the URL of the next requests; GetFile's X-WOPI-ItemVersion (a header)
    is what CheckFileInfo's Version must equal; the new file is deleted through its own URL."""
    requests = """
      <PutRelativeFile PutRelativeFileMode="ExactName" Name="state_copy.wopitest" ResourceId="Doc">
        <SaveState><State Name="NewUrl" Source="Url" /><State Name="NewName" Source="Name" /></SaveState>
      </PutRelativeFile>
      <GetFile OverrideUrl="$State:NewUrl">
        <Validators><ResponseContentValidator ExpectedResourceId="Doc" /></Validators>
        <SaveState><State Name="Seen" Source="X-WOPI-ItemVersion" SourceType="Header" /></SaveState>
      </GetFile>
      <CheckFileInfo OverrideUrl="$State:NewUrl"><Validators><JsonResponseContentValidator>
        <StringProperty Name="Version" ExpectedStateKey="Seen" IsRequired="true" />
        <StringProperty Name="BaseFileName" ExpectedStateKey="NewName" IsRequired="true" />
      </JsonResponseContentValidator></Validators></CheckFileInfo>
      <DeleteFile OverrideUrl="$State:NewUrl" />
      <CheckFileInfo OverrideUrl="$State:NewUrl">
        <Validators><ResponseCodeValidator ExpectedCode="404" /></Validators>
      </CheckFileInfo>"""
    wrong = requests.replace('ExpectedStateKey="NewName"', 'ExpectedValue="something else"').replace(
        "state_copy", "state_copy2"
    )
    cleanup = '<DeleteFile OverrideUrl="$State:NewUrl" />'
    results = engine(suite(group("State", case("Passes", requests) + case("Differs", wrong, cleanup))), document)
    assert results["Passes"].status == PASS, results["Passes"].reason
    assert [r.name for r in results["Passes"].requests] == [
        "PutRelativeFile",
        "GetFile",
        "CheckFileInfo",
        "DeleteFile",
        "CheckFileInfo",
    ]
    assert "/contents" in results["Passes"].requests[1].url
    assert results["Differs"].status == FAIL
    assert results["Differs"].reason == (
        "CheckFileInfo request failed: Incorrect value for 'BaseFileName' "
        "property. Expected: 'something else', Actual: 'state_copy2.wopitest'"
    )


def test_state_that_was_never_saved_fails_the_request(engine, document):
    results = engine(suite(group("G", case("T", '<CheckFileInfo OverrideUrl="$State:Nowhere" />'))), document)
    assert results["T"].status == FAIL and "not found in state dictionary" in results["T"].reason


def test_utf7_names_reach_the_host_as_written(engine, document):
    """Names go out as .NET's UTF-7 ("_" as "+AF8-"); the host must decode them back. (PutRelativeFile's names
    pass through a URL encoding that turns a space into "+", which breaks the UTF-7: none here.)"""
    for mode, header in (("ExactName", "Name"), ("Suggested", "Name")):
        name = f"my_file-ä{mode}!.wopitest"
        requests = f"""
          <PutRelativeFile PutRelativeFileMode="{mode}" Name="{name}" ResourceId="Doc">
            <Validators><JsonResponseContentValidator>
              <StringProperty Name="{header}" ExpectedValue="{name}" IsRequired="true" />
            </JsonResponseContentValidator></Validators>
            <SaveState><State Name="NewUrl" Source="Url" /></SaveState>
          </PutRelativeFile>
          <RenameFile OverrideUrl="$State:NewUrl" Name="re_named +ö{mode}">
            <Validators><JsonResponseContentValidator>
              <StringProperty Name="Name" ExpectedValue="re_named +ö{mode}" IsRequired="true" />
            </JsonResponseContentValidator></Validators>
          </RenameFile>"""
        results = engine(
            suite(group("Names", case(mode, requests, '<DeleteFile OverrideUrl="$State:NewUrl" />'))), document
        )
        assert results[mode].status == PASS, results[mode].reason
        sent = results[mode].requests[0].headers
        target = "X-WOPI-RelativeTarget" if mode == "ExactName" else "X-WOPI-SuggestedTarget"
        assert sent[target] == dotnet.utf7(name) and "+AF8-" in sent[target]
        assert results[mode].requests[1].headers["X-WOPI-RequestedName"] == f"re+AF8-named +-+APY-{mode}"


def test_cleanup_runs_after_a_failure(engine, document, keys):
    requests = """
      <Lock Lock="left-behind" />
      <GetLock><Validators><ResponseCodeValidator ExpectedCode="418" /></Validators></GetLock>
      <Unlock Lock="left-behind" />"""
    results = engine(suite(group("Cleanup", case("T", requests, '<Unlock Lock="left-behind" />'))), document)
    result = results["T"]
    assert result.status == FAIL
    assert result.reason == "GetLock request failed: Incorrect StatusCode. Expected: 418, Actual: 200"
    assert [(r.name, r.cleanup) for r in result.requests] == [("Lock", False), ("GetLock", False), ("Unlock", True)]
    assert get_lock(document, keys) == ""


# ------------------------------------------------------------------------------------------ checks

CHECKS = {
    # name: (request, validators, passes)
    "code": ("CheckFileInfo", '<ResponseCodeValidator ExpectedCode="200" />', True),
    "code-wrong": ("CheckFileInfo", '<ResponseCodeValidator ExpectedCode="204" />', False),
    "or": (
        "CheckFileInfo",
        '<Or><ResponseCodeValidator ExpectedCode="401" /><ResponseCodeValidator ExpectedCode="200" /></Or>',
        True,
    ),
    "or-none": (
        "CheckFileInfo",
        '<Or><ResponseCodeValidator ExpectedCode="401" /><ResponseCodeValidator ExpectedCode="404" /></Or>',
        False,
    ),
    "and": (
        "CheckFileInfo",
        '<And><ResponseCodeValidator ExpectedCode="200" /><ResponseCodeValidator ExpectedCode="404" /></And>',
        False,
    ),
    "header": ("GetLock", '<ResponseHeaderValidator Header="X-WOPI-Lock" ExpectedValue="" />', True),
    "header-required": ("GetLock", '<ResponseHeaderValidator Header="X-WOPI-Nope" IsRequired="true" />', False),
    "header-optional": ("GetLock", '<ResponseHeaderValidator Header="X-WOPI-Nope" ExpectedValue="x" />', True),
    "header-not": (
        "GetFile",
        '<ResponseHeaderValidator Header="X-WOPI-ItemVersion" ExpectedValue="" ShouldMatch="false" />',
        True,
    ),
    "header-greater": (
        "GetFile",
        '<ResponseHeaderValidator Header="X-WOPI-ItemVersion" Comparator="&gt;" ExpectedValue="0" />',
        True,
    ),
    "header-less": (
        "GetFile",
        '<ResponseHeaderValidator Header="X-WOPI-ItemVersion" Comparator="&lt;" ExpectedValue="0" />',
        False,
    ),
    "lock-mismatch": ("Unlock", '<LockMismatchValidator ExpectedLock="" />', True),
    "lock-mismatch-wrong": ("Unlock", '<LockMismatchValidator ExpectedLock="someone" />', False),
    "lock-mismatch-not": ("GetLock", "<LockMismatchValidator />", False),
    "schema": ("CheckFileInfo", '<JsonSchemaValidator Schema="MiniCheckFileInfo" />', True),
    "schema-wrong": ("CheckFileInfo", '<JsonSchemaValidator Schema="Strict" />', False),
    "schema-not-json": ("GetFile", '<JsonSchemaValidator Schema="MiniCheckFileInfo" />', False),
    "content": ("GetFile", '<ResponseContentValidator ExpectedResourceId="ZeroByteFile" />', True),
    "content-wrong": ("GetFile", '<ResponseContentValidator ExpectedResourceId="Doc" />', False),
    "json-absent": ("Lock", '<JsonResponseContentValidator ShouldExist="false" />', True),
    "json-present": ("Lock", '<ResponseCodeValidator ExpectedCode="200" /><JsonResponseContentValidator />', False),
}
PROPERTIES = {
    "bool": ('<BooleanProperty Name="SupportsLocks" ExpectedValue="true" IsRequired="true" />', True),
    "bool-wrong": ('<BooleanProperty Name="SupportsLocks" ExpectedValue="false" />', False),
    "bool-absent": ('<BooleanProperty Name="SupportsNothing" ExpectedValue="true" />', True),
    "bool-required": ('<BooleanProperty Name="SupportsNothing" ExpectedValue="true" IsRequired="true" />', False),
    "long": ('<LongProperty Name="Size" ExpectedValue="0" IsRequired="true" />', True),
    "integer-wrong": ('<IntegerProperty Name="Size" ExpectedValue="7" />', False),
    "string": ('<StringProperty Name="BaseFileName" ExpectedValue="{upper}" IgnoreCase="true" />', True),
    "string-case": ('<StringProperty Name="BaseFileName" ExpectedValue="{upper}" />', False),
    "ends-with": ('<StringProperty Name="BaseFileName" EndsWith=".wopitest" />', True),
    "ends-with-wrong": ('<StringProperty Name="BaseFileName" EndsWith=".docx" />', False),
    "regex-not": ('<StringRegexProperty Name="BaseFileName" ExpectedValue="^\\..*$" ShouldMatch="false" />', True),
    "regex": ('<StringRegexProperty Name="BaseFileName" ExpectedValue="^Te.t-[0-9]+" />', True),
    "regex-wrong": ('<StringRegexProperty Name="BaseFileName" ExpectedValue="^x" />', False),
    "url": ('<AbsoluteUrlProperty Name="HostViewUrl" />', True),
    "url-token": ('<AbsoluteUrlProperty Name="HostViewUrl" MustIncludeAccessToken="true" IsRequired="true" />', False),
    "url-not-url": ('<AbsoluteUrlProperty Name="BaseFileName" />', False),
    "url-required": ('<AbsoluteUrlProperty Name="NoSuchUrl" IsRequired="true" />', False),
}


@pytest.mark.parametrize("name", CHECKS)
def test_each_check_passes_and_fails(engine, shared_document, name):
    request, validators, passes = CHECKS[name]
    attrs = {"Unlock": 'Lock="not-the-lock"', "Lock": 'Lock="checks"'}.get(request, "")
    cleanup = '<Unlock Lock="checks" />' if request == "Lock" else ""
    results = engine(suite(group("Checks", case(name, checking(request, validators, attrs), cleanup))), shared_document)
    assert (results[name].status == PASS) is passes, results[name].reason
    if not passes:
        assert results[name].reason.startswith(f"{request} request failed: ")


@pytest.mark.parametrize("name", PROPERTIES)
def test_each_json_property_check(engine, shared_document, name):
    prop, passes = PROPERTIES[name]
    prop = prop.replace("{upper}", shared_document.name.upper())
    request = checking("CheckFileInfo", f"<JsonResponseContentValidator>{prop}</JsonResponseContentValidator>")
    results = engine(suite(group("Properties", case(name, request))), shared_document)
    assert (results[name].status == PASS) is passes, results[name].reason
    if not passes:
        assert "Incorrect value for '" in results[name].reason


def test_coauth_table_wildcards_and_array_checks(engine, document):
    table = (
        "[{CoauthLockId:'B', CoauthLockMetadata:'mb', CoauthLockType:'Coauth', UserFriendlyName:'*', "
        "CoauthLockTime:'*'}, {CoauthLockId:'A', CoauthLockMetadata:'ma', CoauthLockType:'Coauth', "
        "UserFriendlyName:'*', CoauthLockTime:'*'}]"
    )
    requests = f"""
      <GetCoauthLock CoauthLockId="A" CoauthLockExpirationTimeout="120" CoauthLockMetadata="ma"
          CoauthLockType="Coauth">
        <SaveState><State Name="TableVersion" Source="X-WOPI-CoauthTableVersion" SourceType="Header" /></SaveState>
      </GetCoauthLock>
      <GetCoauthLock CoauthLockId="B" CoauthLockExpirationTimeout="120" CoauthLockMetadataAsBody="mb"
          CoauthLockType="Coauth">
        <Validators><ResponseHeaderValidator Header="X-WOPI-CoauthTableVersion" ExpectedStateKey="TableVersion"
          ShouldMatch="false" /></Validators>
      </GetCoauthLock>
      <GetCoauthTable><Validators><JsonResponseContentValidator>
        <ResponseBodyProperty Name="CoauthTable" ExpectedValue="{table}" IsRequired="true" />
        <ArrayLengthProperty Name="CoauthTable" ExpectedValue="2" IsRequired="true" />
        <StringProperty Name="CoauthTable[1].CoauthLockId" IsRequired="true" />
      </JsonResponseContentValidator></Validators></GetCoauthTable>"""
    wrong = requests.replace("mb', CoauthLockType", "other', CoauthLockType")
    cleanup = '<UnlockCoauthLock CoauthLockId="A" /><UnlockCoauthLock CoauthLockId="B" />'
    results = engine(
        suite(group("Coauth", case("Table", requests, cleanup) + case("Differs", wrong, cleanup))), document
    )
    assert results["Table"].status == PASS, results["Table"].reason
    assert results["Differs"].status == FAIL
    assert "Incorrect value for 'CoauthTable' property." in results["Differs"].reason


def test_frames_of_fullfile_and_zip_saves(engine, document):
    """PutChunkedFile (the delta only) then GetChunkedFile, rebuilt from its frames and compared."""
    requests = """
      <GetChunkedFile>
        <ContentFilters><ContentFilter ChunkingScheme="FullFile" StreamId="MainContent" ChunksToReturn="All"
          AlreadyExistingContent="" /></ContentFilters>
        <SaveState><State Name="Seq" Source="X-WOPI-SequenceNumber" SourceType="Header" /></SaveState>
      </GetChunkedFile>
      <Lock Lock="frames" />
      <PutChunkedFile SequenceNumberStateKey="Seq" Lock="frames">
        <ContentProperties>
          <ContentProperty Name="P" Value="v" Retention="KeepOnContentChange" />
        </ContentProperties>
        <ContentStreams>
          <ContentStream ChunkingScheme="FullFile" StreamId="MainContent" NewContent="hello frames"
            LastKnownHostContent="" />
          <ContentStream ChunkingScheme="Zip" StreamId="Alt" NewContentResourceId="Tiny"
            LastKnownHostContentResourceId="ZeroByteOfficeDocument" />
        </ContentStreams>
        <Validators><ResponseHeaderValidator Header="X-WOPI-SequenceNumber" Comparator="&gt;"
          ExpectedStateKey="Seq" /></Validators>
      </PutChunkedFile>
      <GetChunkedFile>
        <ContentPropertiesToReturn><ContentPropertyToReturn Value="P" /></ContentPropertiesToReturn>
        <ContentFilters>
          <ContentFilter ChunkingScheme="FullFile" StreamId="MainContent" ChunksToReturn="All"
            AlreadyExistingContent="" />
          <ContentFilter ChunkingScheme="Zip" StreamId="Alt" ChunksToReturn="All"
            AlreadyExistingContentResourceId="ZeroByteOfficeDocument" />
        </ContentFilters>
        <Validators><FramesValidator MessageJsonPayloadSchema="GetChunkedFileResponseSchema"
            ExpectedHostBlobsCount="4">
          <ContentStreamValidator StreamId="MainContent" ExpectedChunkingScheme="FullFile"
            AlreadyExistingContent="" ExpectedContent="EXPECTED" />
          <ContentStreamValidator StreamId="Alt" ExpectedChunkingScheme="Zip"
            AlreadyExistingContentResourceId="ZeroByteOfficeDocument" ExpectedContentResourceId="Tiny" />
          <ContentPropertyValidator Name="P" ExpectedValue="v" ExpectedRetention="KeepOnContentChange" />
        </FramesValidator></Validators>
      </GetChunkedFile>"""
    passes = requests.replace("EXPECTED", "hello frames")
    differs = requests.replace("EXPECTED", "goodbye frames")
    cleanup = '<Unlock Lock="frames" />'
    results = engine(suite(group("Frames", case("Same", passes, cleanup))), document)
    assert results["Same"].status == PASS, results["Same"].reason
    results = engine(suite(group("Frames", case("Differs", differs, cleanup))), document)
    assert results["Differs"].reason == (
        "GetChunkedFile request failed: Reconstructed payload 'hello frames' and "
        "expected value 'goodbye frames' are not equal"
    )


def test_no_response_is_an_exception(engine, document):
    requests = checking(
        "CheckFileInfo",
        '<ResponseCodeValidator ExpectedCode="200" />',
        'OverrideUrl="http://127.0.0.1:1/wopi/files/x?access_token=t"',
    )
    result = engine(suite(group("G", case("T", requests))), document)["T"]
    assert result.status == FAIL
    assert "ExceptionValidator: Exception thrown while executing: (ConnectionError)" in result.reason


def test_a_url_that_is_no_uri_fails_its_request(engine, document):
    """A URL urllib cannot split (an IPv6 host without its closing bracket), given as the WOPISrc or answered by
    the host (a PutRelativeFile's Url), is what .NET's Uri refuses: its request fails, the run goes on."""
    broken = "http://[::1/wopi/files/x?access_token=secrettoken"
    requests = checking("CheckFileInfo", '<ResponseCodeValidator ExpectedCode="200" />', f'OverrideUrl="{broken}"')
    results = engine(
        suite(group("G", case("Answered", requests) + case("FileUrl", f'<GetFromFileUrl OverrideUrl="{broken}" />'))),
        document,
    )
    for name in ("Answered", "FileUrl"):
        assert results[name].status == FAIL
        assert "is not a valid URI (Invalid IPv6 URL)" in results[name].reason
        assert "secrettoken" not in results[name].reason
    target = replace(document, wopi_src="http://[::1/wopi/files/x")
    result = engine(suite(group("G", case("T", "<CheckFileInfo />"))), target)["T"]
    assert result.status == FAIL and "is not a valid URI (Invalid IPv6 URL)" in result.reason


def test_json_nested_too_deep_to_read_is_not_json_to_the_schema_check(engine, document):
    deep = b"[" * (sys.getrecursionlimit() * 2) + b"]" * (sys.getrecursionlimit() * 2)
    with answering_host(deep) as origin:
        requests = checking(
            "CheckFileInfo",
            '<JsonSchemaValidator Schema="MiniCheckFileInfo" />',
            f'OverrideUrl="{origin}/wopi/files/x?access_token=t"',
        )
        result = engine(suite(group("G", case("T", requests))), document)["T"]
    assert result.status == FAIL
    assert result.reason == "CheckFileInfo request failed: JsonSchemaValidator: the response is not JSON"


def test_a_host_that_never_answers_is_reported_without_the_access_token(tmp_path, keys):
    """requests' message for it names the URL as sent, access token and all."""
    path = write_checkout(tmp_path / "checkout", suite(group("G", case("T", "<CheckFileInfo />"))))
    secret = "SECRET-ACCESS-TOKEN-123"
    args = ["--wopisrc", "http://127.0.0.1:1/wopi/files/x", "--token", secret, "--testcases", str(path)]
    args += ["--proof-keys", str(keys.directory)]
    out = io.StringIO()
    assert main([*args, "--junit", str(tmp_path / "junit.xml")], out, io.StringIO()) == 1
    assert "ConnectionError" in out.getvalue() and "access_token=[redacted]" in out.getvalue()
    assert secret not in out.getvalue() and secret not in (tmp_path / "junit.xml").read_text()
    err = io.StringIO()
    assert main([*args, "--junit", str(tmp_path / "no" / "junit.xml")], io.StringIO(), err) == 2
    assert err.getvalue().splitlines()[-1].startswith("error: --junit ") and "Traceback" not in err.getvalue()


# ------------------------------------------------------------------- categories, delays, the CLI


def test_categories_and_user_agent(engine, document):
    cases = (
        case("Core", "<CheckFileInfo />")
        + case("Online", "<CheckFileInfo />", category="OfficeOnline")
        + case("Native", "<CheckFileInfo />", category="OfficeNativeClient")
        + case("Coauth", "<CheckFileInfo />", category="WopiCoauth")
    )
    xml = suite(group("Categories", cases))
    assert set(engine(xml, document)) == {"Core", "Online", "Native", "Coauth"}
    native = engine(xml, document, category="OfficeNativeClient")
    assert set(native) == {"Core", "Native"}
    assert native["Core"].requests[0].headers["User-Agent"] == OFFICE_NATIVE_CLIENT_USER_AGENT
    everything = engine(xml, document)
    assert everything["Native"].requests[0].headers["User-Agent"] == OFFICE_NATIVE_CLIENT_USER_AGENT
    assert "User-Agent" not in everything["Core"].requests[0].headers
    # a selection of no test would pass a CI job whose category was mistyped: it is refused, as a missing name is
    only_native = suite(group("G", case("Native", "<CheckFileInfo />", category="OfficeNativeClient")))
    with pytest.raises(DefinitionError, match="No test of group G is in category OfficeOnline"):
        engine(only_native, document, "G", category="OfficeOnline")


def test_delay_groups_are_skipped_unless_asked(engine, document):
    xml = suite(group("Slow", case("Waits", '<Delay DelayTimeInSeconds="90" /><CheckFileInfo />'), delay=True))
    skipped = engine(xml, document)["Waits"]
    assert skipped.status == SKIP and "--include-delays" in skipped.reason
    slept = []
    ran = engine(xml, document, include_delays=True, sleep=slept.append)["Waits"]
    assert ran.status == PASS and slept == [90]


def test_command_line(tmp_path, document, keys, capsys):
    xml = suite(
        group(
            "One",
            case("Good", "<CheckFileInfo />")
            + case("Bad", checking("CheckFileInfo", '<ResponseCodeValidator ExpectedCode="201" />')),
        )
        + group("Two", case("Skipped", "<CheckFileInfo />"), ("HasTeleporter",)),
        PREREQS,
    )
    path = write_checkout(tmp_path / "checkout", xml)
    args = [
        "--wopisrc",
        document.wopi_src,
        "--token",
        document.token,
        "--token-ttl",
        str(document.token_ttl),
        "--testcases",
        str(path),
        "--proof-keys",
        str(keys.directory),
    ]
    out, err = io.StringIO(), io.StringIO()
    assert main([*args, "--junit", str(tmp_path / "junit.xml")], out, err) == 1
    lines = out.getvalue().splitlines()
    assert lines[:3] == [
        "PASS One/Good",
        "FAIL One/Bad: CheckFileInfo request failed: Incorrect StatusCode. Expected: 201, Actual: 200",
        "SKIP Two/Skipped: prerequisite HasTeleporter failed: Incorrect value for 'SupportsTeleporting' property. "
        "Required property missing",
    ]
    assert lines[4].split() == ["group", "passed", "failed", "skipped", "errors"]
    assert lines[5].split() == ["One", "1", "1", "0", "0"] and lines[6].split() == ["Two", "0", "0", "1", "0"]
    assert lines[-1] == "3 tests: 1 passed, 1 failed, 1 skipped, 0 errors"
    assert document.token not in out.getvalue() and str(keys.discovery_path) in err.getvalue()
    suites = ET.parse(tmp_path / "junit.xml").getroot()
    assert suites.get("failures") == "1" and suites.get("skipped") == "1" and suites.get("errors") == "0"

    out = io.StringIO()
    assert main([*args, "--group", "One", "--name", "Good", "--json"], out, io.StringIO()) == 0
    report = json.loads(out.getvalue())
    assert report["summary"] == {"tests": 1, "passed": 1, "failed": 0, "skipped": 0, "errors": 0}
    assert "access_token=..." in report["tests"][0]["requests"][0]["url"]

    # a test skipped because the host does not offer what it tests is no failure of the run
    assert main([*args, "--group", "Two"], io.StringIO(), io.StringIO()) == 0

    capsys.readouterr()
    for timeout in ("-1", "nan", "1e300"):  # 1e300 overflowed the socket's timeval: every request "no answer"
        assert main([*args, "--timeout", timeout]) == 2  # argparse writes to sys.stderr
        assert (
            capsys.readouterr()
            .err.splitlines()[-1]
            .endswith(f"error: argument --timeout: must be more than 0 and at most 3600 seconds, not '{timeout}'")
        )
    args_ttl = args.index("--token-ttl") + 1
    assert main([*args[:args_ttl], "-5", *args[args_ttl + 1 :]]) == 2
    assert (
        capsys.readouterr()
        .err.splitlines()[-1]
        .endswith("error: argument --token-ttl: must be milliseconds since 1970, or 0, not '-5'")
    )

    # a port that is not one took every test, writes too, to port 80 (urllib's port, dropped)
    at = args.index("--wopisrc") + 1
    for wopisrc in (
        document.wopi_src.replace(urlsplit(document.wopi_src).netloc, "127.0.0.1:99999"),
        document.wopi_src.replace(urlsplit(document.wopi_src).netloc, "127.0.0.1:8o80"),
        "ftp://host/wopi/files/x",
        "wopi/files/x",
    ):
        assert main([*args[:at], wopisrc, *args[at + 1 :]]) == 2
        assert "error: argument --wopisrc: must be the WOPISrc of a file, an http(s) URL" in capsys.readouterr().err

    err = io.StringIO()
    assert main([*args, "--name", "NoSuchTest"], io.StringIO(), err) == 2
    assert "Could not find a test case named NoSuchTest" in err.getvalue()


def failing_reports(args: list[str], tmp_path) -> str:
    """What a run with a failing test prints with --verbose, writes with --json, and into its JUnit file, together."""
    out, as_json = io.StringIO(), io.StringIO()
    assert main([*args, "--verbose"], out, io.StringIO()) == 1
    assert main([*args, "--json"], as_json, io.StringIO()) == 1
    return out.getvalue() + as_json.getvalue() + (tmp_path / "junit.xml").read_text()


def test_a_check_quoting_a_credential_the_host_answered_is_reported_without_it(tmp_path, document, keys):
    """A check's message quotes the value it judged: a FileUrl (its download ticket), a Url with an access token.
    What is printed and written (text, --verbose, JSON, JUnit) holds neither."""
    fails = '<StringRegexProperty Name="FileUrl" ExpectedValue="download" ShouldMatch="false" />'
    xml = suite(
        group(
            "Urls",
            case(
                "FileUrl",
                checking("CheckFileInfo", f"<JsonResponseContentValidator>{fails}</JsonResponseContentValidator>"),
            ),
        ),
        PREREQS,
    )
    path = write_checkout(tmp_path / "checkout", xml)
    args = ["--wopisrc", document.wopi_src, "--token", document.token, "--testcases", str(path)]
    args += ["--proof-keys", str(keys.directory), "--junit", str(tmp_path / "junit.xml")]
    printed = failing_reports(args, tmp_path)
    assert "matched the regular expression, but should not" in printed
    assert "/wopi/download/[redacted]" in printed
    assert not re.search(r"/wopi/download/(?!\[redacted\])", printed), printed


def test_a_request_to_a_url_the_host_handed_out_is_reported_without_its_credential(tmp_path, document, keys):
    """GetFromFileUrl goes to the FileUrl CheckFileInfo answered, whose download ticket is its credential: the
    URL as shown (--verbose, JSON, JUnit) holds no ticket, as it holds no access token."""
    requests = """
      <CheckFileInfo><SaveState><State Name="FileUrl" Source="FileUrl" /></SaveState></CheckFileInfo>
      <GetFromFileUrl OverrideUrl="$State:FileUrl">
        <Validators><ResponseCodeValidator ExpectedCode="201" /></Validators>
      </GetFromFileUrl>"""
    path = write_checkout(tmp_path / "checkout", suite(group("Urls", case("FileUrl", requests)), PREREQS))
    args = ["--wopisrc", document.wopi_src, "--token", document.token, "--testcases", str(path)]
    args += ["--proof-keys", str(keys.directory), "--junit", str(tmp_path / "junit.xml")]
    printed = failing_reports(args, tmp_path)
    assert "GetFromFileUrl: 200 GET " in printed
    assert "/wopi/download/[redacted]" in printed
    assert not re.search(r"/wopi/download/(?!\[redacted\])", printed), printed


def test_command_line_against_a_host_it_cannot_use(tmp_path, document, keys):
    """As Microsoft's definitions have it, every group's first prerequisite is WopiValidatorPrereq: a host that is
    down or a wrong token fails it, every test is left without a verdict, and the run must not pass."""
    gate = PREREQS.replace('Name="IsWopiTest"', 'Name="WopiValidatorPrereq"')
    xml = suite(
        group("One", case("Good", "<CheckFileInfo />"), ("WopiValidatorPrereq",))
        + group("Two", case("Teleport", "<CheckFileInfo />"), ("WopiValidatorPrereq", "HasTeleporter")),
        gate,
    )
    path = write_checkout(tmp_path / "checkout", xml)
    args = ["--testcases", str(path), "--proof-keys", str(keys.directory), "--junit", str(tmp_path / "junit.xml")]
    assert main(["--wopisrc", document.wopi_src, "--token", document.token, *args], io.StringIO(), io.StringIO()) == 0

    out, err = io.StringIO(), io.StringIO()
    assert main(["--wopisrc", document.wopi_src, "--token", "not-a-token", *args], out, err) == 1
    reason = "prerequisite WopiValidatorPrereq failed: Response body should exist, but couldn't read resource content."
    assert out.getvalue().splitlines()[:2] == [f"ERROR One/Good: {reason}", f"ERROR Two/Teleport: {reason}"]
    assert out.getvalue().splitlines()[-1] == "2 tests: 0 passed, 0 failed, 0 skipped, 2 errors"
    assert err.getvalue().splitlines()[-1] == f"error: 2 tests could not run: {reason}"
    suites = ET.parse(tmp_path / "junit.xml").getroot()
    assert (suites.get("errors"), suites.get("skipped"), suites.get("failures")) == ("2", "0", "0")
    assert suites.find("testsuite/testcase/error").get("message") == reason

    down = f"http://127.0.0.1:{free_port()}/wopi/files/nothing-listens"
    err = io.StringIO()
    assert main(["--wopisrc", down, "--token", document.token, "--json", *args], io.StringIO(), err) == 1
    assert "error: 2 tests could not run: prerequisite WopiValidatorPrereq failed: " in err.getvalue()
    assert "Connection refused" in err.getvalue() and document.token not in err.getvalue()


def test_layout_of_a_real_checkout(tmp_path):
    core = tmp_path / "src" / "WopiValidator.Core"
    (core / "JsonSchemas").mkdir(parents=True)
    (tmp_path / "TestCases.xml").write_text(suite(""))
    layout = Layout.find(tmp_path / "TestCases.xml")
    assert layout.schemas == core / "JsonSchemas" and layout.core == core


@pytest.mark.parametrize("head", [False, True], ids=["body", "head"])
def test_an_answer_that_does_not_come_whole_within_the_timeout_is_no_answer(head):
    transport = Transport(timeout=1)
    with trickling_host(head=head) as origin:
        begun = time.monotonic()
        response, _, _ = transport.send(HttpCall("GET", f"{origin}/wopi/files/F?access_token=secrettoken", {}))
        took = time.monotonic() - begun
    transport.close()
    assert took < 5  # not until the host stops sending
    assert response.status == EXCEPTION_STATUS
    assert response.error is not None and "timed out" in response.error and "secrettoken" not in response.error
    assert "HTTPConnectionPool(host=" in response.error  # as urllib3 names its pools


def test_the_timeout_counts_from_when_the_request_began_its_body_included():
    """The timeout counted from when the request had been sent: a host that took most of it to read the body (each
    write going through in time) had it all again for its answer. 64 MiB: more than the sockets' buffers hold,
    which take a body at once however slowly the host reads it."""
    transport = Transport(timeout=2)
    with slow_reading_host(64 << 20, reading=1.4, answering=1.4) as origin:
        begun = time.monotonic()
        response, _, _ = transport.send(HttpCall("PUT", f"{origin}/wopi/files/F/contents", {}, b"x" * (64 << 20)))
        took = time.monotonic() - begun
    transport.close()
    assert response.status == EXCEPTION_STATUS, response.status  # it answered whole 2.8 s after it began
    assert response.error is not None and "timed out" in response.error
    assert took < 2 + 1.5


def test_an_answer_longer_than_the_validator_keeps_is_counted_and_hashed_not_kept():
    content = b"x" * (KEEP_LIMIT + 1)  # a GetFile of gigabytes, as far as what is kept goes
    transport = Transport(timeout=30)
    with answering_host(content) as origin:
        response, _, _ = transport.send(HttpCall("GET", f"{origin}/wopi/files/F/contents", {}, text_expected=False))
        as_json, _, _ = transport.send(HttpCall("GET", f"{origin}/wopi/files/F", {}))
    transport.close()
    assert response.status == 200 and response.body == b"" and not response.kept
    assert response.size == len(content) and response.sha256 == hashlib.sha256(content).hexdigest()
    assert checks.content_length(response) == []  # its Content-Length is its size all the same
    assert as_json.status == 200 and as_json.text is None  # no JSON check reads a part of it as the whole


def test_ctrl_c_ends_a_run_with_a_line_and_status_130(tmp_path, keys):
    path = write_checkout(tmp_path / "checkout", suite(group("G", case("T", "<CheckFileInfo />"))))
    with silent_host() as (origin, wait_for):
        done = interrupted(
            ["-m", "wopihost.validator", "--wopisrc", f"{origin}/wopi/files/x", "--token", "t"]
            + ["--testcases", str(path), "--proof-keys", str(keys.directory)],
            wait_for,
            1,
        )
    assert done.returncode == 130 and done.stderr.splitlines()[-1] == "interrupted", done.stderr
    assert "Traceback" not in done.stderr
