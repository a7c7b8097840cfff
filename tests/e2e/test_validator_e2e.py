"""Microsoft's own WOPI validator test definitions, run by wopihost.validator against a real wopihost server.

Runs only when WOPIHOST_VALIDATOR_DIR names a checkout of github.com/microsoft/wopi-validator-core (its
TestCases.xml, src/WopiValidator.Core/JsonSchemas and Resources are read from there; nothing of it is in this
repository). The server requires proof keys, from a discovery the run writes, and runs once with CSPP Plus off
and once on, and once more with containers off. Every test must pass or be skipped (none may fail or be left
without a verdict, ERROR), and exactly the groups below may be skipped, each because of
the prerequisite named (None: a group that waits minutes for coauth locks to expire, run only on request).
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path

import pytest

from wopihost.localserver import LocalServer
from wopihost.validator import ERROR, FAIL, SKIP, Layout, ProofSigner, Resources, Runner, Schemas, Target, load
from wopihost.validator.transport import Transport

pytestmark = pytest.mark.e2e

VALIDATOR_DIR = os.environ.get("WOPIHOST_VALIDATOR_DIR", "").strip()

# Skipped whatever the mode: a host either supports PutRelativeFile or says it does not; its containers
# are there, so the "containers unsupported" flavour of the RenameFile tests does not apply; the delay group
# is not run. (The document sits in a folder of its own: a drive's root, never renamed, would skip the
# RenameContainer group too.)
SKIPPED_ALWAYS = {
    "PutRelativeFileUnsupported": "UserCanNotWriteRelativePrereq",
    "RenameFileIfCreateChildFileIsNotSupported": "ContainersUnsupportedPrereq",
    "CoauthLockExpiration": None,
}
# Without CSPP Plus the host does not offer coauth locks or incremental file transfer.
SKIPPED_WITHOUT_CSPP_PLUS = {
    "CoauthLocks": "SupportsCoauthPrereq",
    "IncrementalFileTransferErrorCases": "SupportsCoauthPrereq",
    "IncrementalFileTransferWithFullFileChunkingScheme": "SupportsCoauthPrereq",
    "IncrementalFileTransferWithZipChunkingScheme": "SupportsCoauthPrereq",
    "RenameFileWithCoauthLockSupported": "SupportsCoauthPrereq",
}
# With containers turned off (WOPIHOST_CONTAINERS=off) the container groups skip, and the RenameFile tests run in
# their "containers unsupported" flavour instead.
SKIPPED_WITHOUT_CONTAINERS = {
    "PutRelativeFileUnsupported": "UserCanNotWriteRelativePrereq",
    "RenameFileIfCreateChildFileIsSupported": "ContainersPrereq",
    "CoauthLockExpiration": None,
    **{
        group: "ContainersPrereq"
        for group in (
            "Ecosystem",
            "Container",
            "RenameContainer",
            "EnumerateAncestorsAndChildren",
            "CreateChildFileAndDeleteFile",
            "GetSharingUrlForContainerWithTypeReadOnly",
            "GetSharingUrlForContainerWithTypeReadWrite",
            "GetSharingUrlForContainerWithUnknownType",
        )
    },
}
EXPECTED_SKIPPED = {
    ("off", "on"): {**SKIPPED_ALWAYS, **SKIPPED_WITHOUT_CSPP_PLUS},
    ("on", "on"): SKIPPED_ALWAYS,
    ("on", "off"): SKIPPED_WITHOUT_CONTAINERS,
}


@pytest.fixture(scope="module")
def checkout() -> Path:
    if not VALIDATOR_DIR:
        pytest.skip(
            "set WOPIHOST_VALIDATOR_DIR to a checkout of github.com/microsoft/wopi-validator-core "
            "to run Microsoft's validator test definitions"
        )
    path = Path(VALIDATOR_DIR) / "TestCases.xml"
    if not path.is_file():
        pytest.fail(f"WOPIHOST_VALIDATOR_DIR={VALIDATOR_DIR} has no TestCases.xml")
    return path


@pytest.mark.parametrize("cspp_plus, containers", EXPECTED_SKIPPED)
def test_microsofts_test_cases(checkout, tmp_path, cspp_plus, containers):
    keys = ProofSigner.load_or_create(tmp_path / "proof-keys")
    server = LocalServer.start(
        tmp_path / "host",
        extra_env={
            "WOPIHOST_DISCOVERY_URL": str(keys.discovery_path),
            "WOPIHOST_PROOF_KEYS": "require",
            "WOPIHOST_CSPP_PLUS": cspp_plus,
            "WOPIHOST_CONTAINERS": containers,
        },
    )
    try:
        document = tmp_path / "test.wopitest"
        document.write_bytes(b"")
        added = server.cli("files", "add", str(document), "--name", "test.wopitest", "--folder", "Validator", "--json")
        file_id = json.loads(added)["id"]
        # The container tests reach the document's folders through the URLs its token's responses hand out.
        issued = json.loads(server.cli("token", "issue", file_id, "--user", "demo", "--folders", "all", "--json"))
        layout = Layout.find(checkout)
        definitions = load(layout.testcases)
        transport = Transport(timeout=60)
        runner = Runner(
            definitions,
            Resources(layout, definitions.resources),
            Schemas(layout.schemas),
            Target(f"{server.base}/wopi/files/{file_id}", issued["access_token"], int(issued["access_token_ttl"])),
            keys,
            transport,
        )
        try:
            results = list(runner.run())
        finally:
            transport.close()
    finally:
        server.stop()

    assert len(results) == sum(len(g.tests) for g in definitions.groups)
    failed = [f"{r.group}/{r.name}: {r.reason}" for r in results if r.status in (FAIL, ERROR)]
    assert not failed, "\n".join(failed)
    skipped: dict[str, set] = defaultdict(set)
    for result in results:
        if result.status == SKIP:
            skipped[result.group].add(result.prereq)
    assert {
        group: prereqs.pop() if len(prereqs) == 1 else prereqs for group, prereqs in skipped.items()
    } == EXPECTED_SKIPPED[cspp_plus, containers]
    partly = [r.group for r in results if r.status != SKIP and r.group in skipped]
    assert not partly, f"groups partly skipped: {sorted(set(partly))}"
    log = server.log_text()
    assert "Traceback" not in log, log
