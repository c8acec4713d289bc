"""bench-postfix's rows and report: one line per row with every round's messages/s and
their median, what each run checked, and issue 18's ratios of medians against its
targets."""

from __future__ import annotations

import argparse
import statistics
import subprocess
from dataclasses import dataclass, field

from bench.postfix_tools import Tools
from bench.report import print_machine, print_table_head
from bench.stats import verdict

ROWS = ("bare", "mailgate-held", "postfix-held", "mailgate-e2e", "postfix-e2e", "mailgate-dkim")
TITLES = {
    "bare": "bare aiosmtpd answering 250",
    "mailgate-held": "mailgate, held accept",
    "postfix-held": "Postfix, accept to hold queue",
    "mailgate-e2e": "mailgate, end to end",
    "postfix-e2e": "Postfix, end to end",
    "mailgate-dkim": "mailgate, e2e, DKIM RSA-2048",
}
DELIVERING = ("mailgate-e2e", "postfix-e2e", "mailgate-dkim")
# (numerator, denominator, target, what): issue 18's "How good", and one without a target.
RATIOS = (
    ("mailgate-held", "bare", 1.3, "SMTP held accept / bare aiosmtpd"),
    ("mailgate-held", "postfix-held", None, "SMTP held accept / Postfix's hold queue"),
    ("mailgate-e2e", "postfix-e2e", 1.5, "end to end / Postfix end to end"),
    ("mailgate-dkim", "postfix-e2e", 1.0, "e2e with DKIM / Postfix e2e unsigned"),
)


@dataclass
class Row:
    key: str
    round: int
    messages: int
    accept_s: float = 0.0  # smtp-source's wall time for the timed messages
    delivered_s: float = 0.0  # delivering rows: until smtp-sink had them all
    notes: list[str] = field(default_factory=list)
    failed: str = ""

    @property
    def rate(self) -> float:
        """The row's figure: delivered/s for the delivering rows, accepted/s otherwise."""
        took = self.delivered_s if self.key in DELIVERING else self.accept_s
        return self.messages / took if took > 0 else 0.0

    @property
    def accept_rate(self) -> float:
        return self.messages / self.accept_s if self.accept_s > 0 else 0.0


def postfix_version(tools: Tools) -> str:
    try:
        got = subprocess.run(
            [tools.postconf, "-d", "-h", "mail_version"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError):
        return "?"
    return got.stdout.strip() or "?"


def print_header(opts: argparse.Namespace, tools: Tools) -> None:
    print_machine("mailgate against Postfix and a bare aiosmtpd (smtp-source / smtp-sink)", "bare")
    print(f"  postfix       {postfix_version(tools)} ({tools.master})")
    print(
        f"  load          smtp-source -d -s {opts.sessions} -m {opts.messages} "
        f"(+{opts.warmup_messages} untimed first), {opts.size}-byte message, 1 recipient"
    )
    print(f"  rounds        {opts.rounds}, every row once per round; figures are messages/s")


def median(rows: list[Row], key: str, accept: bool = False) -> float | None:
    rates = [r.accept_rate if accept else r.rate for r in rows if r.key == key and not r.failed]
    return statistics.median(rates) if rates else None


def print_table(rows: list[Row], rounds: int) -> None:
    keys = [k for k in ROWS if any(r.key == k for r in rows)]
    cols = "".join(f"{'round ' + str(n):>10}" for n in range(1, rounds + 1))
    print_table_head(f"{'row (msg/s)':<38}{cols}{'median':>10}")
    for key in keys:
        for accept in (False, True) if key in DELIVERING else (False,):
            title = "  its accept alone" if accept else TITLES[key]
            cells = ""
            for r in (r for r in rows if r.key == key):
                value = r.accept_rate if accept else r.rate
                cells += f"{'FAILED':>10}" if r.failed else f"{value:>10,.0f}"
            m = median(rows, key, accept)
            print(f"{title:<38}{cells}{'-' if m is None else f'{m:,.0f}':>10}")
    print("(end to end: from smtp-source's start until smtp-sink had every message; its")
    print(" accept alone: smtp-source's own time, while the relay was still delivering)")
    print()
    for r in rows:
        if r.failed:
            print(f"{TITLES[r.key]} #{r.round}: FAILED: {r.failed}")
        elif r.notes:
            print(f"{TITLES[r.key]} #{r.round}: " + "; ".join(r.notes))


def print_ratios(rows: list[Row]) -> None:
    print()
    print("issue 18's ratios (of the medians; each round's in brackets):")
    for num, den, target, what in RATIOS:
        top, bottom = median(rows, num), median(rows, den)
        if top is None or bottom is None or bottom == 0:
            continue
        ratio = top / bottom
        per_round = []
        for n in sorted({r.round for r in rows}):
            a = next((r for r in rows if r.key == num and r.round == n and not r.failed), None)
            b = next((r for r in rows if r.key == den and r.round == n and not r.failed), None)
            if a and b and b.rate:
                per_round.append(f"{a.rate / b.rate:.3f}")
        judged = f"target >= {target:.1f}x: {verdict(ratio >= target)}" if target else "no target"
        print(f"  {what:<40} {ratio:6.3f}x ({', '.join(per_round)})  {judged}")
