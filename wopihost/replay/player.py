"""Sending a recording's requests to a host, in order, and judging each answer as it comes.

Each client is a thread with its own HTTP session (kept-alive connections, let go after a pause: httpclient) and
its own bindings, so that N clients replay the same session side by side, each learning its own upload sessions
and tickets. Answers are streamed: hashed as they arrive, and kept only when they may be compared as JSON or
text (up to KEEP_LIMIT), so that a GetFile of gigabytes costs no memory. With `speed="recorded"` each client
keeps the recording's gaps between requests; otherwise it sends the next request as soon as an answer is read.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

import requests
from requests.structures import CaseInsensitiveDict
from urllib3.util import SKIP_HEADER

from ..validator.httpclient import KEEP_LIMIT, Client, read
from ..validator.signing import ProofSigner
from ..validator.transport import NO_ANSWER
from .archive import Exchange, Recording
from .bindings import Bindings, Unbound
from .compare import Answer, Difference, judge
from .outgoing import CannotReplay, Outgoing, build

MATCHED, DIVERGED, ERROR = "matched", "diverged", "error"


@dataclass
class Result:
    client: int
    exchange: Exchange
    outcome: str
    status: int | None = None
    differences: list[Difference] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0  # from sending the request to the last byte of the answer


@dataclass
class Run:
    results: list[Result]
    clients: int
    seconds: float  # from the first request sent to the last answer read, all clients together


@dataclass(frozen=True)
class Options:
    speed: str | None = None  # None or "max": as fast as possible; "recorded": the recording's gaps
    clients: int = 1
    timeout: float = 60.0
    signer: ProofSigner | None = None


def replay(
    recording: Recording,
    start: Callable[[], Bindings],
    options: Options,
    on_result: Callable[[Result], None] = lambda result: None,
) -> Run:
    """Replay `recording` with `options.clients` clients, each starting from `start()`'s bindings;
    `on_result` sees each result as soon as it is judged (from the clients' threads, one at a time)."""
    lock = threading.Lock()

    def report(result: Result) -> None:
        with lock:
            on_result(result)

    begun = time.monotonic()
    clients = [_Client(n, recording, start(), options, report) for n in range(1, options.clients + 1)]
    results = clients[0].play() if len(clients) == 1 else _side_by_side(clients)
    return Run(results, options.clients, time.monotonic() - begun)


def _side_by_side(clients: list[_Client]) -> list[Result]:
    """The clients' results, each client playing in a thread of its own. The threads are daemons, so that Ctrl-C,
    a KeyboardInterrupt in this thread as it waits for them, ends the replay at once: a pool's threads would be
    waited for as Python exits, each to the end of its recording."""
    played: list[list[Result] | BaseException] = [[] for _ in clients]

    def play(index: int) -> None:
        try:
            played[index] = clients[index].play()
        except BaseException as error:  # raised again below, in the caller's thread
            played[index] = error

    threads = [
        threading.Thread(target=play, args=(index,), name=f"replay-client-{client.number}", daemon=True)
        for index, client in enumerate(clients)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    results = []
    for each in played:
        if isinstance(each, BaseException):
            raise each
        results.extend(each)
    return results


class _Client:
    def __init__(
        self, number: int, recording: Recording, bindings: Bindings, options: Options, report: Callable
    ) -> None:
        self.number, self.recording, self.bindings, self.options = number, recording, bindings, options
        self.report = report

    def play(self) -> list[Result]:
        results = []
        first = self.recording.exchanges[0].started
        begun = time.monotonic()
        with Client() as session:
            session.trust_env = False  # no proxy from the environment between the replay and the host
            for exchange in self.recording.exchanges:
                if self.options.speed == "recorded":
                    delay = begun + (exchange.started - first).total_seconds() - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                result = self.one(session, exchange)
                results.append(result)
                self.report(result)
        return results

    def one(self, session: requests.Session, exchange: Exchange) -> Result:
        result = Result(self.number, exchange, ERROR)
        try:
            outgoing = build(exchange, self.bindings, self.recording.max_body)
        except Unbound as missing:
            result.error = (
                f"it needs {missing.placeholder}, which no earlier answer handed out: "
                f"give it with --map '{missing.placeholder}=VALUE'"
            )
            return result
        except CannotReplay as error:
            result.error = str(error)
            return result
        try:
            answer, result.seconds = self.send(session, outgoing, exchange)
        except NO_ANSWER as error:
            result.error = self.bindings.redact(f"no answer ({type(error).__name__}: {error})")
            return result
        verdict = judge(exchange, answer, self.bindings)
        result.status = answer.status
        result.outcome = DIVERGED if verdict.differences else MATCHED
        result.differences = [
            Difference(self.bindings.redact(d.where), d.recorded, self.bindings.redact(d.actual))
            for d in verdict.differences
        ]
        result.notes = verdict.notes
        return result

    def send(self, session: requests.Session, outgoing: Outgoing, exchange: Exchange) -> tuple[Answer, float]:
        # Only the recorded headers go: no User-Agent or Accept-Encoding of the HTTP library's own.
        sent: CaseInsensitiveDict = CaseInsensitiveDict({"User-Agent": SKIP_HEADER, "Accept-Encoding": SKIP_HEADER})
        for name, value in outgoing.headers:
            sent[name] = f"{sent[name]}, {value}" if name in sent and sent[name] != SKIP_HEADER else value
        prepared = requests.Request(outgoing.method, outgoing.url, headers=sent, data=outgoing.body).prepare()
        signer = self.options.signer
        if outgoing.proof and signer is not None and prepared.url is not None:
            prepared.headers.update(signer.headers(_credential(prepared.url, sent), prepared.url))
        started = time.monotonic()
        with session.send(prepared, stream=True, allow_redirects=False, timeout=self.options.timeout) as reply:
            # kept when it may be compared as JSON or text: the recorded answer or this one says it is
            content = exchange.content
            keep = content.text or _is_textual(content.mime) or _is_textual(reply.headers.get("Content-Type", ""))
            got = read(reply, KEEP_LIMIT if keep else 0)
            seconds = time.monotonic() - started
            headers = {name.lower(): value for name, value in reply.headers.items()}
            return Answer(reply.status_code, headers, got.size, got.sha256, got.data if keep else None), seconds


def _is_textual(content_type: str) -> bool:
    media = content_type.split(";")[0].strip().lower()
    return media.startswith("text/") or media == "application/json" or media.endswith("+json")


def _credential(url: str, headers: CaseInsensitiveDict) -> str:
    """The access token a proof signs: the URL's, or else the Bearer token."""
    tokens = parse_qs(urlsplit(url).query).get("access_token")
    if tokens:
        return tokens[0]
    scheme, _, token = (headers.get("Authorization") or "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""
