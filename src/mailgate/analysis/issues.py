"""What a check finds: an Issue with its severity and penalty (report.py scores them)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mailgate.analysis.draft import Draft

SEVERITIES = ("critical", "high", "medium", "low", "info")


@dataclass(frozen=True, slots=True)
class Issue:
    type: str
    subtype: str
    severity: str  # one of SEVERITIES
    detail: str
    penalty: int
    recommendation: str = ""

    def public(self) -> dict[str, object]:
        return {
            "type": self.type,
            "subtype": self.subtype,
            "severity": self.severity,
            "detail": self.detail,
            "penalty": self.penalty,
        }


Check = Callable[["Draft"], list[Issue]]
