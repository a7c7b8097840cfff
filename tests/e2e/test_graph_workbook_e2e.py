"""Workbook sessions against a real gunicorn server (two workers): msgraph-sdk, unmodified, drives a session
and the long-running creation; and an operation accepted by one server is answered by another one sharing
its database and storage."""

from __future__ import annotations

import asyncio
import io
import threading
import time

import openpyxl
import psutil
import pytest

from wopihost.localserver import LocalServer
from wopihost.validator.httpclient import Client

from .graph_sdk import sdk_client


def workbook_bytes() -> bytes:
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = "Sheet1"
    for row in ([1, 10, "=A1*B1"], [2, 20, "=A2*B2"], ["=SUM(A1:A2)", None, "=SUM(C1:C2)"]):
        sheet.append(row)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


@pytest.fixture
def book(server):
    api = server.api_token("alice")
    http = Client()
    http.headers["Authorization"] = f"Bearer {api['access_token']}"
    item = http.put(f"{api['graph_url']}/me/drive/root:/book.xlsx:/content", data=workbook_bytes())
    assert item.status_code == 201, item.text
    return api, http, item.json()["id"]


def test_msgraph_sdk_drives_a_session_and_the_long_running_creation(server, book):
    from kiota_abstractions.base_request_configuration import RequestConfiguration
    from kiota_abstractions.method import Method
    from kiota_http.middleware.options import HeadersInspectionHandlerOption
    from msgraph.generated.drives.item.items.item.workbook.create_session.create_session_post_request_body import (
        CreateSessionPostRequestBody,
    )
    from msgraph.generated.models.o_data_errors.o_data_error import ODataError
    from msgraph.generated.models.workbook_range import WorkbookRange

    api, http, item_id = book
    client = sdk_client(server.base, api["access_token"])
    workbook = client.drives.by_drive_id(api["drive_id"]).items.by_drive_item_id(item_id).workbook

    def config(session: str | None = None, prefer: str | None = None, options=None) -> RequestConfiguration:
        config = RequestConfiguration()
        if session:
            config.headers.add("workbook-session-id", session)
        if prefer:
            config.headers.add("Prefer", prefer)
        config.options = options or []
        return config

    async def patch(builder, session: str, **payload):  # the SDK has no typed PATCH of a range
        request = builder.to_get_request_information(config(session))
        request.http_method = Method.PATCH
        body = WorkbookRange()
        body.additional_data = payload
        request.set_content_from_parsable(client.request_adapter, "application/json", body)
        return await client.request_adapter.send_async(request, WorkbookRange, {"XXX": ODataError})

    async def run() -> dict:
        seen = {}
        session = await workbook.create_session.post(CreateSessionPostRequestBody(persist_changes=True))
        seen["session"] = (bool(session.id), session.persist_changes)
        sheets = await workbook.worksheets.get(request_configuration=config(session.id))
        seen["sheets"] = [sheet.name for sheet in sheets.value]
        cells = workbook.worksheets.by_workbook_worksheet_id("Sheet1").range_with_address("A1:C3")
        seen["before"] = (await cells.get(request_configuration=config(session.id))).additional_data["values"]
        inputs = workbook.worksheets.by_workbook_worksheet_id("Sheet1").range_with_address("A1:B1")
        await patch(inputs, session.id, values=[[5, 7]])
        seen["after"] = (await cells.get(request_configuration=config(session.id))).additional_data["values"]
        await workbook.refresh_session.post(request_configuration=config(session.id))
        await workbook.close_session.post(request_configuration=config(session.id))
        try:
            await cells.get(request_configuration=config(session.id))
        except ODataError as error:
            seen["closed"] = error.response_status_code

        inspect = HeadersInspectionHandlerOption(inspect_response_headers=True)
        await workbook.create_session.post(
            CreateSessionPostRequestBody(persist_changes=False),
            request_configuration=config(prefer="respond-async", options=[inspect]),
        )
        operation_id = next(iter(inspect.response_headers.get("location"))).rsplit("/", 1)[1]
        deadline = time.monotonic() + 30
        while True:
            operation = await workbook.operations.by_workbook_operation_id(operation_id).get()
            if operation.status.value in ("succeeded", "failed") or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        seen["operation"] = operation.status.value
        key = operation.resource_location.split("key='", 1)[1].rstrip("')")
        info = await workbook.session_info_resource_with_key(key).get()
        seen["async session"] = (info.id == key, info.persist_changes)
        return seen

    seen = asyncio.run(run())
    assert seen["session"] == (True, True) and seen["sheets"] == ["Sheet1"]
    assert seen["before"] == [[1, 10, 10], [2, 20, 40], [3, "", 50]]
    assert seen["after"] == [[5, 7, 35], [2, 20, 40], [7, "", 75]]  # the SUM and the products recalculated
    assert seen["closed"] == 404
    assert seen["operation"] == "succeeded" and seen["async session"] == (True, False)
    # the persistent session saved the file: a new version, with the new inputs
    saved = openpyxl.load_workbook(
        io.BytesIO(http.get(f"{api['graph_url']}/me/drive/items/{item_id}/content").content)
    )["Sheet1"]
    assert (saved["A1"].value, saved["B1"].value) == (5, 7)


def test_a_calculation_no_process_can_hold_ends_its_call_not_the_worker(server, book):
    """A read-only token's PATCH asking IronCalc for a million by a million cells: in the worker, the failed
    allocation aborted it (SIGABRT) with every request it was serving. Now the call's own process ends: 400, the
    same workers serve on, and the next call gets a process of its own."""
    api, http, item_id = book
    reader = Client()
    reader.headers["Authorization"] = f"Bearer {server.api_token('alice', '--read-only')['access_token']}"
    workbook = f"{api['graph_url']}/me/drive/items/{item_id}/workbook"
    workers = {p.pid for p in server.workers()}
    session = reader.post(f"{workbook}/createSession", json={"persistChanges": False}).json()["id"]
    cell = f"{workbook}/worksheets/Sheet1/range(address='E1')"
    heavy = {"formulas": [["=ROWS(A1:A1048576*TRANSPOSE(A1:A1048576))"]]}
    answer = reader.patch(cell, json=heavy, headers={"workbook-session-id": session})
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["innerError"]["code"] == "unsupportedWorkbook"
    assert {p.pid for p in server.workers()} == workers
    light = {"formulas": [["=ROWS(A1:A3*TRANSPOSE(A1:A3))"]]}
    assert reader.patch(cell, json=light, headers={"workbook-session-id": session}).json()["values"] == [[3]]
    assert "was sent SIG" not in server.log_text()


def test_a_workers_calculating_process_ends_with_it(server, book):
    """A worker SIGKILLed (the OOM killer, gunicorn's last resort) while its workbook call calculated left the
    call's process calculating, up to its memory cap, for as long as the calculation took."""
    api, http, item_id = book
    cell = f"{api['graph_url']}/me/drive/items/{item_id}/workbook/worksheets/Sheet1/range(address='N1:AO1')"
    slow = {"formulas": [["=COUNT(C:F)"] * 28]}  # four whole columns each, some 0.9 s of CPU to count
    threading.Thread(target=lambda: _quietly(lambda: http.patch(cell, json=slow)), daemon=True).start()

    def calculating():
        return [
            (worker, child)
            for worker in server.workers()
            for child in worker.children()
            if "wopihost.xlsx.child" in " ".join(child.cmdline()) and child.cpu_percent(0.2) > 50
        ]

    deadline = time.monotonic() + 60
    while not (found := calculating()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert found, "no workbook call's process was calculating"
    [(worker, child)] = found
    worker.kill()
    gone, _ = psutil.wait_procs([child], timeout=10)
    assert gone, "the call's process outlived its worker"


def _quietly(call) -> None:
    try:
        call()
    except Exception:  # the worker serving it was killed
        pass


def test_an_operation_accepted_by_one_server_is_answered_by_another(server, book, tmp_path, database):
    """Two servers (nodes) on one database and one data directory: the long-running creation accepted by
    the first is polled, and its session used, through the second."""
    api, http, item_id = book
    (tmp_path / "other").mkdir()
    other = LocalServer.start(tmp_path / "other", database, extra_env={"WOPIHOST_DATA_DIR": str(server.data_dir)})
    try:
        url = f"{api['graph_url']}/me/drive/items/{item_id}/workbook"
        accepted = http.post(
            f"{url}/createSession", json={"persistChanges": False}, headers={"Prefer": "respond-async"}
        )
        assert accepted.status_code == 202 and accepted.json() == {}
        poll = accepted.headers["Location"].replace(server.base, other.base)
        deadline = time.monotonic() + 30
        while (status := http.get(poll).json())["status"] not in ("succeeded", "failed"):
            assert time.monotonic() < deadline, status
            time.sleep(0.1)
        assert status["status"] == "succeeded"
        info = http.get(status["resourceLocation"].replace(server.base, other.base)).json()
        assert info["persistChanges"] is False
        on_other = url.replace(server.base, other.base)
        changed = http.patch(
            f"{on_other}/worksheets/Sheet1/range(address='A1')",
            json={"values": [[100]]},
            headers={"workbook-session-id": info["id"]},
        )
        assert changed.status_code == 200, changed.text
        inside = http.get(f"{url}/worksheets/Sheet1/range(address='C1')", headers={"workbook-session-id": info["id"]})
        assert inside.json()["values"] == [[1000]]
        outside = http.get(f"{url}/worksheets/Sheet1/range(address='C1')")
        assert outside.json()["values"] == [[10]]  # a non-persistent session never touches the file
    finally:
        other.stop()
    assert "Traceback" not in other.log_text(), other.log_text()


def test_msgraph_sdk_reads_a_range_on_a_sheet_named_with_an_apostrophe(server, book):
    """msgraph-sdk puts the address it is given in range(address='{address}') as it is: Excel's 'Bob''s data'!A1,
    or 'Bob's data'!A1 as a caller may write it, reach the sheet; one whose quote is not closed is 400."""
    from msgraph.generated.models.o_data_errors.o_data_error import ODataError

    api, http, item_id = book
    url = f"{api['graph_url']}/me/drive/items/{item_id}/workbook"
    added = http.post(f"{url}/worksheets/add", json={"name": "Bob's data"})
    assert added.status_code == 201, added.text
    cell = http.patch(f"{url}/worksheets/Sheet1/range(address='D1')", json={"values": [["=A1*100"]]})
    assert cell.status_code == 200, cell.text
    copied = http.patch(f"{url}/worksheets('Bob''s data')/range(address='A1')", json={"values": [["=Sheet1!D1+1"]]})
    assert copied.status_code == 200, copied.text
    client = sdk_client(server.base, api["access_token"])
    sheet = (
        client.drives.by_drive_id(api["drive_id"]).items.by_drive_item_id(item_id).workbook.worksheets
    ).by_workbook_worksheet_id("Bob's data")

    async def run() -> dict:
        seen: dict = {}
        for address in ("'Bob''s data'!A1", "'Bob's data'!A1"):
            answer = await sheet.range_with_address(address).get()
            seen[address] = (answer.address, answer.additional_data["values"])
        try:
            await sheet.range_with_address("'Bob's data!A1").get()
        except ODataError as error:
            seen["unclosed"] = (error.response_status_code, error.error.code)
        return seen

    seen = asyncio.run(run())
    assert seen["'Bob''s data'!A1"] == seen["'Bob's data'!A1"] == ("'Bob''s data'!A1", [[101]])
    assert seen["unclosed"] == (400, "invalidRequest")


def test_non_persistent_sessions_made_at_once_on_several_workers_never_pass_the_limit(tmp_path, database):
    """Eight createSession requests at once, spread over the server's workers (threads each), with a limit of two
    non-persistent sessions a user: two are made, the others get 429 with Retry-After, whichever worker they reach."""
    server = LocalServer.start(
        tmp_path, database, workers=2, extra_env={"WOPIHOST_MAX_WORKBOOK_SESSIONS_PER_USER": "2"}
    )
    try:
        api = server.api_token("alice")
        url = f"{api['graph_url']}/me/drive/root:/book.xlsx:"
        headers = {"Authorization": f"Bearer {api['access_token']}"}
        assert Client().put(f"{url}/content", data=workbook_bytes(), headers=headers).status_code == 201
        go = threading.Barrier(8)
        answers: list = []

        def create() -> None:
            http = Client()  # a connection of its own: gunicorn hands each to one worker
            go.wait(30)
            answers.append(http.post(f"{url}/workbook/createSession", json={"persistChanges": False}, headers=headers))

        threads = [threading.Thread(target=create) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert sorted(answer.status_code for answer in answers) == [201] * 2 + [429] * 6, [a.text for a in answers]
        for answer in answers:
            if answer.status_code == 429:
                assert answer.json()["error"]["code"] == "activityLimitReached"
                assert 0 < int(answer.headers["Retry-After"]) <= 7 * 60
    finally:
        server.stop()
    assert "Traceback" not in server.log_text(), server.log_text()
