"""The SMTP benchmark's results: scenario names and their table titles, one load's
figures (LoadResult) and one scenario's (Scenario), and finding them again by name."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from bench.stats import nearest_rank

SCENARIOS = (
    *("ceiling", "held", "e2e", "e2e-dkim", "paced-held", "paced-e2e", "paced-dkim"),
    *("failover", "failover-blackhole", "paced-webhooks", "paced-webhooks-dead", "fill"),
    *("memory", "memory-http"),
)
TITLES = {
    "ceiling": "ceiling (bare aiosmtpd)",
    "held": "mailgate, delivery held",
    "e2e": "mailgate, end to end (accept)",
    "e2e-dkim": "mailgate e2e, DKIM (accept)",
    "paced-held": "paced, delivery held",
    "paced-e2e": "paced e2e (accept)",
    "paced-dkim": "paced e2e, DKIM (accept)",
    "failover": "failover, dead port (accept)",
    "failover-blackhole": "failover, blackhole (accept)",
    "paced-webhooks": "paced e2e, webhooks (accept)",
    "paced-webhooks-dead": "paced e2e, dead webhook (accept)",
    "fill": "mailgate, queue fill (held)",
    "memory": "memory, 20 x 20 MB over SMTP",
    "memory-http": "memory, 9 MB attachment (HTTP)",
}
# The second table row of a delivering scenario: its delivered rate and 250->delivered.
DELIVERED_TITLES = {
    "e2e": "mailgate, end to end (delivered)",
    "e2e-dkim": "mailgate e2e, DKIM (delivered)",
    "paced-e2e": "paced e2e (delivered)",
    "paced-dkim": "paced e2e, DKIM (delivered)",
    "failover": "failover, dead port (delivered)",
    "failover-blackhole": "failover, blackhole (delivered)",
    "paced-webhooks": "paced e2e, webhooks (delivered)",
    "paced-webhooks-dead": "paced e2e, dead webhook (deliv.)",
}


@dataclass
class LoadResult:
    accepted: int
    window: float
    latencies_us: list[int]
    errors: Counter[str]
    connected: int
    sessions: int
    loop: str
    accepted_total: int = 0
    last_accept: float = 0.0
    go: float = 0.0
    timed: bool = True  # False: a fill, measured from GO to the last accept
    acks: list[tuple[str, float]] = field(default_factory=list)  # tracking runs only
    rate: float | None = None  # paced runs: the offered messages/s
    late: int = 0  # paced runs: messages that started > LATE_START behind their slot

    @property
    def accept_rate(self) -> float:
        return self.accepted / self.window if self.window > 0 else 0.0

    def percentile_ms(self, q: float) -> float:
        """Nearest-rank percentile."""
        return nearest_rank(sorted(self.latencies_us), q) / 1000


@dataclass
class Scenario:
    name: str
    load: LoadResult | None = None
    round: int = 1  # with --rounds: which pass over the scenarios this is
    peak_rss: int = 0
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    failed: str = ""


def key_of(sc: Scenario) -> str:
    """The scenario name (e2e, failover, ...) of a result."""
    return next((k for k, title in TITLES.items() if title == sc.name), "")


def shown(sc: Scenario) -> str:
    """The name in the table: with several rounds, which round too."""
    return sc.name if sc.round == 1 else f"{sc.name} #{sc.round}"


def find(scenarios: list[Scenario], key: str) -> Scenario | None:
    """The scenario ``key`` (ceiling, held, ...) if it ran and produced figures."""
    return next((s for s in scenarios if s.name == TITLES[key] and s.load), None)
