"""Whatever a client sends, in the headers or the body, the answer is never a 500, on every database."""

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .fuzz import OVERRIDES, bodies, headers


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(override=st.sampled_from(OVERRIDES), contents=st.booleans(), body=bodies, headers=headers)
def test_random_requests_never_cause_a_server_error(wopi, override, contents, body, headers):
    url = wopi.url("/contents" if contents else "")
    response = wopi.testapp.post(url, body, headers={"X-WOPI-Override": override, **headers}, expect_errors=True)
    assert response.status_int < 500 or response.status_int == 501, response.headers
    assert response.status_int == 200 or response.headers["X-WOPI-FailureReason"]
    get = wopi.testapp.get(wopi.url("/contents"), headers=headers, expect_errors=True)
    assert get.status_int < 500, get.headers
