"""Running test cases as Microsoft's validator does.

For each test of a group, the group's prerequisite test cases run first, every time, in order; the first that
does not pass stops them and the test is SKIPPED with that prerequisite's failure as the reason: the host does
not offer what the group tests. The test is an ERROR instead when the failure says nothing about what the
host offers, only that the run cannot use it: the prerequisite is WopiValidatorPrereq, which every group names
first and which only checks that the .wopitest document can be reached (a host that is down, a wrong token or
WOPISrc), or a request of the prerequisite was sent and got no answer. (The validator skips these too, and
counts every skipped test as a failure, or with --IgnoreSkipped none.) The test's requests then run in order
with their own state; the first request that fails a check fails the test and stops it. Cleanup requests run
afterwards whatever happened (even after an error), unchecked, so that a failed test leaves no lock behind for
the next one.

Tests are selected by category as the validator does: All runs everything; any other category runs the
WopiCore tests plus those of that category. Groups marked HasDelay (coauth lock expiry, minutes of waiting)
are skipped unless delays are asked for. Two differences from the validator, which would stop the whole
run instead: a prerequisite is looked up among all prerequisite cases whatever the category (so a category
run does not fail on the WopiCoauth prerequisites of groups it does not run), and a request that cannot be
built (state that holds no URL, a body that cannot be made) fails its test instead of ending the run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

from ..logs import redact
from .checks import Context, evaluate
from .chunks import BodyError
from .definitions import DefinitionError, Definitions, Group, Request, TestCase
from .requests import OFFICE_NATIVE_CLIENT_USER_AGENT, RequestError, Target, build
from .resources import ResourceError, Resources, Schemas
from .signing import ProofSigner
from .state import State, StateError
from .transport import EXCEPTION_STATUS, Response, Transport, exception_response

PASS, FAIL, SKIP, ERROR = "PASS", "FAIL", "SKIP", "ERROR"
SETUP_PREREQ = "WopiValidatorPrereq"
DELAY_REASON = "the group waits for coauth locks to expire; run with --include-delays"


@dataclass
class RequestRecord:
    name: str
    method: str
    url: str
    status: int
    errors: list[str] = field(default_factory=list)
    elapsed: float = 0.0
    cleanup: bool = False
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class TestResult:
    __test__ = False  # not a pytest class

    group: str
    name: str
    status: str
    message: str = ""
    errors: list[str] = field(default_factory=list)
    requests: list[RequestRecord] = field(default_factory=list)
    prereq: str | None = None  # the prerequisite that failed, for a skipped test or an error
    description: str = ""
    elapsed: float = 0.0

    @property
    def reason(self) -> str:
        """One line: why the test failed, was skipped or could not run ("" for a pass)."""
        if self.status == PASS:
            return ""
        first = self.errors[0] if self.errors else ""
        if self.prereq:
            return f"prerequisite {self.prereq} failed: {first or self.message}"
        if not first:
            return self.message
        return f"{self.message.rstrip('.')}: {first}"


@dataclass
class Selection:
    group: Group
    tests: list[TestCase]
    prereqs: list[TestCase]


class Runner:
    def __init__(
        self,
        definitions: Definitions,
        resources: Resources,
        schemas: Schemas,
        target: Target,
        signer: ProofSigner | None = None,
        transport: Transport | None = None,
        category: str = "All",
        include_delays: bool = False,
        sleep: Callable[[float], None] = time.sleep,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ):
        self.definitions, self.resources, self.schemas = definitions, resources, schemas
        self.target, self.signer = target, signer
        self.transport = transport or Transport()
        self.category, self.include_delays = category, include_delays
        self.sleep, self.now = sleep, now

    # ---------------------------------------------------------------------------------- selection

    def select(self, group: str | None = None, name: str | None = None) -> list[Selection]:
        """The groups and tests to run, in file order. DefinitionError for an unknown group, test or
        prerequisite, or a JSON schema the checks name that does not exist."""
        missing = self.definitions.schema_ids() - self.schemas.ids()
        if missing:
            raise DefinitionError(f"Schema with ID '{sorted(missing)[0]}' not found in {self.schemas.directory}")
        chosen = []
        for candidate in self.definitions.groups:
            prereqs = []
            for prereq in candidate.prereqs:
                if prereq not in self.definitions.prereqs:
                    raise DefinitionError(f"Could not find a prereq test case named {prereq}")
                prereqs.append(self.definitions.prereqs[prereq])
            if group is not None and candidate.name != group:
                continue
            tests = [t for t in candidate.tests if self._in_category(t)]
            if name is not None:
                tests = [t for t in tests if t.name == name]
            if tests:
                chosen.append(Selection(candidate, tests, prereqs))
        if group is not None and not any(g.name == group for g in self.definitions.groups):
            raise DefinitionError(f"Could not find a test group named {group}")
        if name is not None:
            found = sum(len(s.tests) for s in chosen)
            if found == 0:
                raise DefinitionError(f"Could not find a test case named {name}")
            if found > 1:
                raise DefinitionError(f"More than one test case is named {name}")
        if not chosen:  # a run of no test would pass: a mistyped category must not pass a CI job
            where = f"group {group}" if group is not None else "the definitions"
            raise DefinitionError(f"No test of {where} is in category {self.category}")
        return chosen

    def _in_category(self, test: TestCase) -> bool:
        return self.category == "All" or test.category == "WopiCore" or test.category == self.category

    # ----------------------------------------------------------------------------------- running

    def run(self, group: str | None = None, name: str | None = None) -> Iterator[TestResult]:
        for selection in self.select(group, name):
            for test in selection.tests:
                yield self.execute(selection.group, test, selection.prereqs)

    def execute(self, group: Group, test: TestCase, prereqs: list[TestCase]) -> TestResult:
        """One test of a group: its prerequisites, then the test."""
        if group.has_delay and not self.include_delays:
            return TestResult(group.name, test.name, SKIP, DELAY_REASON, description=test.description)
        agent = self._user_agent(test)
        for prereq in prereqs:
            outcome = self.run_case(prereq, group.name, agent)
            if outcome.status != PASS:
                return TestResult(
                    group.name,
                    test.name,
                    ERROR if _run_is_broken(prereq, outcome) else SKIP,
                    "Prerequisites failed",
                    outcome.errors,
                    outcome.requests,
                    prereq=prereq.name,
                    description=test.description,
                    elapsed=outcome.elapsed,
                )
        return self.run_case(test, group.name, agent)

    def _user_agent(self, test: TestCase) -> str | None:
        if self.category == "OfficeNativeClient" or test.category == "OfficeNativeClient":
            return OFFICE_NATIVE_CLIENT_USER_AGENT
        return None

    def run_case(self, test: TestCase, group: str = "", user_agent: str | None = None) -> TestResult:
        """A test case's requests and cleanup, without its prerequisites."""
        started = time.monotonic()
        state = State.initial(self.target.token, self.target.wopi_src)
        ctx = Context(self.resources, self.schemas, state, self.now)
        result = TestResult(group, test.name, PASS, description=test.description)
        try:
            for request in test.requests:
                if request.kind == "Delay":
                    self.sleep(request.delay_seconds or 0)
                    continue
                response, record = self._send(request, state, user_agent)
                # a check quotes the value it judged, a FileUrl's ticket or a Url's access token among them:
                # what the reports print and write holds no credential
                record.errors = [redact(error) for error in evaluate(request.checks, response, ctx)]
                unexplained = not any("ExceptionValidator" in error for error in record.errors)
                if record.errors and response.error is not None and unexplained:
                    # Without <Validators> only the status is checked; say what stood in for a response.
                    record.errors.insert(0, f"no response: {response.error}")
                result.requests.append(record)
                if record.errors:
                    result.status = FAIL
                    fail_message = test.fail_message or ""
                    result.message = fail_message if fail_message.strip() else f"{request.kind} request failed."
                    result.errors = list(record.errors)
                    break
                state.save(request.state, response)
        finally:
            for request in test.cleanup:
                if request.kind == "Delay":
                    self.sleep(request.delay_seconds or 0)
                    continue
                try:
                    _, record = self._send(request, state, user_agent)
                except Exception as error:  # cleanup may fail by design once the test has failed
                    record = RequestRecord(request.kind, "", "", 0, [f"({type(error).__name__}) {error}"])
                record.cleanup = True
                result.requests.append(record)
            result.elapsed = time.monotonic() - started
        return result

    def _send(self, request: Request, state: State, user_agent: str | None) -> tuple[Response, RequestRecord]:
        signer = self.signer.headers if self.signer is not None else None
        try:
            call = build(request, self.target, state, self.resources, signer, user_agent)
        except (RequestError, StateError, ResourceError, BodyError) as error:
            response = exception_response(f"({type(error).__name__}) {error}")
            return response, RequestRecord(request.kind, "", "", response.status)
        response, url, headers = self.transport.send(call)
        return response, RequestRecord(
            request.kind, call.method, url, response.status, elapsed=response.elapsed, headers=headers
        )


def _run_is_broken(prereq: TestCase, outcome: TestResult) -> bool:
    """Whether a failed prerequisite says that the run cannot reach the host, rather than what the host offers."""
    unanswered = any(r.url and r.status == EXCEPTION_STATUS for r in outcome.requests if not r.cleanup)
    return prereq.name == SETUP_PREREQ or unanswered
