"""Problems found by loaders, and the report that collects them instead of raising."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

# --------------------------------------------------------------------------
# Problems and reports
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One bad input found by a loader: where it is and what is wrong."""

    source: str | None
    item: str
    message: str

    def __str__(self) -> str:
        return self.message


@dataclass
class LoadReport:
    """Collects problems instead of raising, when passed to a loader as ``report=``.

    The bad part (an annotation, a mask, a file) is left out and loading goes
    on; images with no annotations are kept with no segments.

    Examples
    --------
    >>> report = LoadReport()
    >>> len(report), bool(report)
    (0, False)
    """

    problems: list[Problem] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.problems)

    def __bool__(self) -> bool:
        return bool(self.problems)

    def __iter__(self) -> Iterator[Problem]:
        return iter(self.problems)

    def __str__(self) -> str:
        if not self.problems:
            return "no problems"
        return "\n".join(f"- {p.message}" for p in self.problems)


def record_problem(report: LoadReport | None, source: str | None, item: str, message: str) -> None:
    """Raise, or record when a report collects problems."""
    if report is None:
        raise ValueError(message)
    report.problems.append(Problem(source, item, message))
