"""``POST /v1/messages/analyze``: send's validation and a deliverability review, no commit.

The body is a send request. It goes through send's own model, preparation and accept
policy (Acceptor.preview), so anything send would refuse comes back as a critical issue
(can_send false) instead of an error answer; then the content checks and the sender
domain's DKIM/SPF/DMARC. ``?dns=false`` skips the DNS lookups (the DKIM key check stays).
"""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import Response

from mailgate.analysis import draft as drafts
from mailgate.analysis.checks import run_checks
from mailgate.analysis.dns_checks import DnsChecker, dkim_issue
from mailgate.analysis.issues import Issue
from mailgate.analysis.report import report
from mailgate.exceptions import PolicyRefused
from mailgate.ingress.http import ApiContext, json_response, parse_model
from mailgate.ingress.http_params import Route
from mailgate.ingress.http_send import prepare_native
from mailgate.submission.prepare import ApiError, invalid
from mailgate.submission.request import SendRequest

log = logging.getLogger(__name__)

VALIDATION_PENALTY = 50


def validation_issue(exc: ApiError) -> Issue:
    """A refusal of send as a critical issue (subtype: send's error code)."""
    return Issue(
        "validation",
        exc.code,
        "critical",
        exc.message,
        VALIDATION_PENALTY,
        "Fix the request: send would refuse it" + (f" ({exc.field})" if exc.field else ""),
    )


def _dns_wanted(request: Request) -> bool:
    raw = request.query_params.get("dns", "true").lower()
    if raw not in ("true", "false", "1", "0"):
        raise invalid("invalid_parameter", "dns: true or false", "dns")
    return raw in ("true", "1")


def routes(ctx: ApiContext) -> list[Route]:
    checker = DnsChecker(ctx.settings)

    async def analyze(request: Request) -> Response:
        cred = await ctx.credential(request, need="send")
        use_dns = _dns_wanted(request)
        obj = await ctx.read_json(request)
        issues: list[Issue] = []
        try:
            req = parse_model(SendRequest, obj)
        except ApiError as exc:
            return json_response({"data": report([validation_issue(exc)])})
        draft: drafts.Draft | None = None
        try:
            prep = await prepare_native(ctx, request, cred, req)
            row = ctx.acceptor.preview(prep.submission)
        except ApiError as exc:
            issues.append(validation_issue(exc))
        except PolicyRefused as refused:
            issues.append(validation_issue(ApiError.refused(refused)))
        else:
            left_out = [r for r in prep.submission.recipients if r not in row.recipients]
            if left_out:
                issues.append(
                    Issue(
                        "recipients",
                        "suppressed_recipients",
                        "info",
                        "On the suppression list, would be left out: " + ", ".join(left_out[:5]),
                        0,
                    )
                )
            draft = drafts.from_mime(
                prep.submission.data,
                sender=prep.sender,
                subject=prep.subject,
                recipients=len(prep.submission.recipients),
                tags=prep.tags,
                size=row.size,
            )
        if draft is None:
            draft = drafts.from_request(req)
        issues += run_checks(draft)
        if draft.validated:
            issues += dkim_issue(ctx.settings, draft.from_domain)
            if use_dns:
                issues += await checker.check(draft.from_domain)
        return json_response({"data": report(issues)})

    return [("/v1/messages/analyze", analyze, ["POST"])]
