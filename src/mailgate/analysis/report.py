"""Score, grade and the answer of ``POST /v1/messages/analyze`` (the seed's shape).

score = 100 minus the sum of the penalties (never below 0). The grade reads the score
and the worst severity, so that one serious problem is never hidden by a high score:

* ``poor``: any critical issue (the relay would refuse the message: can_send is false),
  or a score below 50;
* ``fair``: any high issue, or a score below 75;
* ``good``: any medium issue, or a score below 90;
* ``excellent``: otherwise (low and info issues only, score 90 or more).

The seed's example (one medium missing_text, penalty 5) is "good" with a score of 95.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mailgate.analysis.issues import SEVERITIES, Issue

_RANK = {severity: i for i, severity in enumerate(SEVERITIES)}


def grade(score: int, issues: Sequence[Issue]) -> str:
    worst = min((_RANK[i.severity] for i in issues), default=len(SEVERITIES))
    if worst <= _RANK["critical"] or score < 50:
        return "poor"
    if worst <= _RANK["high"] or score < 75:
        return "fair"
    if worst <= _RANK["medium"] or score < 90:
        return "good"
    return "excellent"


def report(issues: Sequence[Issue]) -> dict[str, Any]:
    """The ``data`` of the answer: issues worst first (stable within a severity)."""
    ordered = sorted(issues, key=lambda i: _RANK[i.severity])
    score = max(0, 100 - sum(i.penalty for i in ordered))
    counts = {s: sum(1 for i in ordered if i.severity == s) for s in SEVERITIES}
    recommendations: list[str] = []
    for issue in ordered:
        if issue.recommendation and issue.recommendation not in recommendations:
            recommendations.append(issue.recommendation)
    return {
        "score": score,
        "grade": grade(score, ordered),
        "issues_count": len(ordered),
        "critical_count": counts["critical"],
        "high_count": counts["high"],
        "medium_count": counts["medium"],
        "low_count": counts["low"],
        "info_count": counts["info"],
        "can_send": counts["critical"] == 0,
        "recommendations": recommendations,
        "issues": [i.public() for i in ordered],
    }
