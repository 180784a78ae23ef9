"""Validation issues and the OperationOutcome that reports them (https://hl7.org/fhir/R5/operationoutcome.html)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from html import escape
from typing import Any, Literal

Severity = Literal["fatal", "error", "warning", "information"]
SEVERITY_ORDER = {"fatal": 0, "error": 1, "warning": 2, "information": 3}
# FHIR strings may not hold control characters other than tab, LF and CR, nor can XML 1.0
# (https://hl7.org/fhir/R5/datatypes.html#string); messages echo requests, so those are escaped.
_UNPRINTABLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def printable(text: str) -> str:
    r"""``text`` with the characters a FHIR string cannot hold written as Python escapes (``\x04``)."""
    return _UNPRINTABLE.sub(lambda m: ascii(m.group())[1:-1], text)


@dataclass(frozen=True)
class Issue:
    """One finding of the validator.

    ``code`` is an R5 issue-type code; ``message`` is for people; ``expression`` is a FHIRPath to the
    element (relative to the resource); ``source`` names the file or resource; ``rule`` the
    constraint key or rule that failed; ``layer`` which validation layer found it.
    """

    severity: Severity
    code: str
    message: str
    expression: str | None = None
    source: str | None = None
    rule: str | None = None
    layer: str = "structure"

    def to_fhir(self) -> dict[str, Any]:
        """Return this issue as an ``OperationOutcome.issue`` element."""
        issue: dict[str, Any] = {
            "severity": self.severity,
            "code": self.code,
            "details": {"text": printable(self.message)},
        }
        if self.source or self.rule:  # where a finding came from, for people tracing it
            where = f"{self.source}: " if self.source else ""
            issue["diagnostics"] = printable(f"{where}[{self.layer}{'/' + self.rule if self.rule else ''}]")
        if self.expression:
            issue["expression"] = [printable(self.expression)]
        return issue


def is_error(issue: Issue) -> bool:
    """Whether an issue makes the resource invalid (fatal or error)."""
    return issue.severity in {"fatal", "error"}


def operation_outcome(issues: Iterable[Issue]) -> dict[str, Any]:
    """Return an OperationOutcome with the issues, most severe first, or one 'all OK' information issue."""
    ordered = sorted(issues, key=lambda i: (SEVERITY_ORDER[i.severity], i.source or "", i.expression or ""))
    body = [i.to_fhir() for i in ordered] or [
        {"severity": "information", "code": "informational", "details": {"text": "No issues found."}}
    ]
    return {"resourceType": "OperationOutcome", "text": _narrative(body), "issue": body}


def _narrative(issues: list[dict[str, Any]]) -> dict[str, str]:
    """A generated narrative listing the issues (dom-6: a resource should have one)."""
    items = "".join(
        f"<li>{escape(i['severity'])} ({escape(i['code'])}): {escape(i['details']['text'])}"
        + (f" <code>{escape(', '.join(i['expression']))}</code>" if i.get("expression") else "")
        + "</li>"
        for i in issues
    )
    return {
        "status": "generated",
        "div": f'<div xmlns="http://www.w3.org/1999/xhtml"><h3>Outcome</h3><ul>{items}</ul></div>',
    }
