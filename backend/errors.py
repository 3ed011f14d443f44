"""Errors as values with codes, rendered as RFC 9457 problem+json."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

PROBLEM_JSON = "application/problem+json"


@dataclass(frozen=True)
class FieldError:
    field: str
    message: str
    code: str

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "message": self.message, "code": self.code}


@dataclass
class Problem(Exception):
    """An error a client caused or must know about; `code` is stable, `detail` is for humans."""

    status: int
    code: str
    title: str
    detail: str
    errors: list[FieldError] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": f"/problems/{self.code.replace('_', '-')}",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "code": self.code,
        }
        if self.errors:
            body["errors"] = [e.as_dict() for e in self.errors]
        return body


def validation_problem(errors: list[FieldError]) -> Problem:
    detail = "; ".join(f"{e.field}: {e.message}" for e in errors)
    return Problem(422, "invalid_request", "Invalid request", detail, errors)


def not_found(what: str) -> Problem:
    return Problem(404, "not_found", "Not found", f"{what} does not exist")


def unavailable(detail: str) -> Problem:
    return Problem(503, "service_unavailable", "Service unavailable", detail, headers={"Retry-After": "5"})
