"""Progress for long work: a bar on a terminal, a few plain lines in a log file.

tqdm redraws its bar with carriage returns, which a log (CI output, ``nohup``,
a file) keeps as hundreds of half lines. When stderr is not a terminal,
:class:`Progress` prints one line every ``interval`` seconds and one at the
end instead.
"""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import Any, TextIO

__all__ = ["Progress"]


class Progress:
    """Count work done out of ``total``; shown as a bar, as log lines, or not at all.

    Examples
    --------
    >>> import io
    >>> log = io.StringIO()
    >>> with Progress(3, "explaining", unit="batch", stream=log) as bar:
    ...     for _ in range(3):
    ...         bar.update()
    >>> log.getvalue().splitlines()[-1].startswith("explaining: 3/3 batch")
    True
    """

    def __init__(
        self,
        total: int,
        desc: str,
        *,
        unit: str = "it",
        enabled: bool = True,
        interval: float = 30.0,
        stream: TextIO | None = None,
    ) -> None:
        self.total, self.desc, self.unit, self.interval = total, desc, unit, interval
        self.count = 0
        self.postfix = ""
        self.stream = sys.stderr if stream is None else stream
        self.start = self.last = time.monotonic()
        self.bar: Any = None
        self.enabled = enabled
        if enabled and _is_terminal(self.stream):
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=desc, unit=unit, leave=False, file=self.stream)

    def update(self, n: int = 1) -> None:
        """Record ``n`` more units done."""
        self.count += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.enabled and time.monotonic() - self.last >= self.interval:
            self._line()

    def set_postfix(self, **values: object) -> None:
        """Values shown after the count (for example the current loss)."""
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())
        if self.bar is not None:
            self.bar.set_postfix(values)

    def close(self) -> None:
        """End the bar, or print the final log line."""
        if self.bar is not None:
            self.bar.close()
        elif self.enabled:
            self._line()

    def _line(self) -> None:
        self.last = time.monotonic()
        elapsed = self.last - self.start
        rate = f", {self.count / elapsed:.1f} {self.unit}/s" if elapsed > 0 else ""
        extra = f", {self.postfix}" if self.postfix else ""
        print(f"{self.desc}: {self.count}/{self.total} {self.unit}{rate}{extra}", file=self.stream, flush=True)

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()


def _is_terminal(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())
