"""JUnit XML, the report CI systems read: test suites of test cases, each passed, failed, in error or skipped.

One writer for the test tools that report to CI (`wopihost validate`, `wopihost replay`); each turns its own
results into `Suite`s of `Case`s. The text it is given is written as given, but for what XML cannot hold
(escaped as \\uXXXX): callers redact secrets first.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass, field

from .text import NOT_XML


def _xml(text: str) -> str:
    """`text` with what XML cannot hold escaped: ElementTree writes it as it is, or as a reference that is no
    better, and a host's odd answer quoted in a message must not make the whole report unreadable."""
    return NOT_XML.sub(lambda m: f"\\u{ord(m[0]):04x}", text)


@dataclass
class Case:
    name: str
    seconds: float = 0.0
    failure: str | None = None  # the one-line message of a failed case
    error: str | None = None  # ... of a case that could not be run to a verdict
    skipped: str | None = None  # ... of a skipped case
    details: str = ""  # the failure's or error's full text
    output: str = ""  # what else the case has to say (a passed replay request's notes: what was not compared)


@dataclass
class Suite:
    name: str
    cases: list[Case] = field(default_factory=list)


def _count(cases: Iterable[Case]) -> dict[str, str]:
    cases = list(cases)
    return {
        "tests": str(len(cases)),
        "failures": str(sum(c.failure is not None for c in cases)),
        "errors": str(sum(c.error is not None and c.failure is None for c in cases)),
        "skipped": str(sum(c.skipped is not None and c.failure is None and c.error is None for c in cases)),
    }


def junit_xml(name: str, suites: Iterable[Suite]) -> bytes:
    suites = list(suites)
    root = ET.Element("testsuites", {"name": _xml(name), **_count(c for s in suites for c in s.cases)})
    for suite in suites:
        time = f"{sum(c.seconds for c in suite.cases):.3f}"
        suite_name = _xml(suite.name)
        element = ET.SubElement(root, "testsuite", {"name": suite_name, **_count(suite.cases), "time": time})
        for case in suite.cases:
            item = ET.SubElement(
                element, "testcase", classname=suite_name, name=_xml(case.name), time=f"{case.seconds:.3f}"
            )
            details = _xml(case.details) or None
            if case.failure is not None:
                ET.SubElement(item, "failure", message=_xml(case.failure)).text = details
            elif case.error is not None:
                ET.SubElement(item, "error", message=_xml(case.error)).text = details
            elif case.skipped is not None:
                ET.SubElement(item, "skipped", message=_xml(case.skipped))
            if case.output:
                ET.SubElement(item, "system-out").text = _xml(case.output)
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)
