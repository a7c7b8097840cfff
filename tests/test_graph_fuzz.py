"""Whatever a Graph client sends (paths, methods, headers, JSON or noise), the answer is never a 500 and an
error is always Graph's JSON, on every database."""

import json
from urllib.parse import quote

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .fuzz import NASTY_VALUES, values

SEGMENTS = [
    "me",
    "drive",
    "drives",
    "users",
    "sites",
    "groups",
    "root",
    "items",
    "children",
    "content",
    "createUploadSession",
    "uploadSessions",
    "downloads",
    "root:",
    ":",
    "::",
    "root:/a:",
    "a.txt",
    "dir",
    "items/root:",
    "%3A",
    "%2F",
    "..",
    ".",
    "!",
    "b!x",
    "x" * 22,
    "\u00e9",
    "a:b",
    "$top",
    "alice",
]
paths = st.lists(st.sampled_from(SEGMENTS) | st.text(max_size=6), min_size=1, max_size=7).map("/".join)
queries = st.sampled_from(
    [
        "",
        "?$top=0",
        "?$top=x",
        "?$top=99999999999999999999",
        "?$skiptoken=zz",
        "?$skiptoken=" + "A" * 22 + ".",
        "?@microsoft.graph.conflictBehavior=bogus",
    ]
)
HEADERS = ["Content-Range", "If-Match", "If-None-Match", "Range", "Authorization", "client-request-id"]
header_values = values | st.sampled_from(
    NASTY_VALUES + ["bytes 0-0/1", "bytes 5-1/3", "bytes 0-9/" + "9" * 30, "*", '"{x},1"', "Bearer", "Bearer x"]
)
headers = st.dictionaries(st.sampled_from(HEADERS), header_values, max_size=3)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.text(max_size=10)
    | st.sampled_from(["fail", "replace", "rename", "2026-01-01T00:00:00Z", "a\x00b", "\ud800", "/drive/root:/x"]),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                [
                    "item",
                    "name",
                    "folder",
                    "file",
                    "fileSize",
                    "deferCommit",
                    "description",
                    "fileSystemInfo",
                    "createdDateTime",
                    "lastModifiedDateTime",
                    "parentReference",
                    "id",
                    "path",
                    "driveId",
                    "@microsoft.graph.conflictBehavior",
                    "@name.conflictBehavior",
                    "@microsoft.graph.sourceUrl",
                ]
            )
            | st.text(max_size=6),
            inner,
            max_size=4,
        )
    ),
    max_leaves=15,
)
bodies = st.binary(max_size=64) | json_values.map(lambda v: json.dumps(v).encode("utf-8", "surrogatepass"))


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(
    method=st.sampled_from(["GET", "PUT", "POST", "PATCH", "DELETE"]),
    path=paths,
    query=queries,
    body=bodies,
    headers=headers,
    prefix=st.sampled_from(["/v1.0/", "/_api/v2.0/", "/v1.0/me/drive/"]),
)
def test_random_graph_requests_never_cause_a_server_error(graph, method, path, query, body, headers, prefix):
    headers = {**graph.headers(), **headers}
    url = prefix + quote(path, safe="/:%!$@") + query  # as a client sends it: percent-encoded where it must be
    response = graph.testapp.request(url, method=method, body=body, headers=headers, expect_errors=True)
    assert response.status_int < 500, (url, response.body[:300])
    if response.status_int >= 400:
        assert response.content_type == "application/json", (url, response.status)
        assert response.json["error"]["code"]
