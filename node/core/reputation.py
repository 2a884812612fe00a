"""What a requester remembers of each compute node: how its executions turned out.

Tallies only grow. The score weighs what a node did on purpose: a result outvoted (or a
reveal that did not open its seal) is a lie and costs five agreements, a withheld reveal
two. A node whose score falls below the requester's threshold is not asked again. Failures
and timeouts may be bad luck (a crash, a partition): they never exclude a node, but one
with more of them than agreements, or a negative score, ranks after the clean ones.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

#: The default threshold: one lie, with nothing earned before it, is enough to be dropped.
DEFAULT_MIN_SCORE = -4

AGREEMENTS = "agreements"
DISAGREEMENTS = "disagreements"
WITHHELD = "withheld"
FAILURES = "failures"
TIMEOUTS = "timeouts"


@dataclass(frozen=True)
class Reputation:
    agreements: int = 0
    disagreements: int = 0
    withheld: int = 0
    failures: int = 0
    timeouts: int = 0

    @property
    def score(self) -> int:
        return self.agreements - 5 * self.disagreements - 2 * self.withheld

    @property
    def blemished(self) -> bool:
        """Ranks after clean records: a negative score, or more mishaps than agreements."""
        return self.score < 0 or self.failures + self.timeouts > self.agreements

    def counted(self, tally: str) -> Reputation:
        """This record with one more of ``tally`` (a field name)."""
        return replace(self, **{tally: getattr(self, tally) + 1})

    def to_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}
