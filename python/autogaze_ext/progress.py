"""Progress of long work on stderr.

A tqdm bar when tqdm is installed (it is optional, not a dependency) and stderr is a terminal;
otherwise one plain line every ``every`` updates, so logs of background runs stay readable.
"""

from __future__ import annotations

import sys


class Progress:
    """``update(n, note)`` after each piece of work, ``close()`` at the end (or use ``with``).

    total: units of work; desc: what is done ("gaze"); unit: what one unit is ("frame");
    every: plain lines are printed at every ``every``-th update and at the last; quiet: nothing.
    """

    def __init__(self, total: int, desc: str, unit: str, every: int = 1, quiet: bool = False):
        self.total, self.desc, self.unit, self.every, self.quiet = total, desc, unit, every, quiet
        self.done = self.updates = 0
        self.bar = None
        if not quiet and sys.stderr.isatty():
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=total, unit=unit, desc=desc, file=sys.stderr)
            except ImportError:
                pass

    def update(self, n: int = 1, note: str = "") -> None:
        self.done += n
        self.updates += 1
        if self.bar is not None:
            self.bar.update(n)
        elif not self.quiet and (self.updates % self.every == 0 or self.done >= self.total):
            share = 100 * self.done / self.total if self.total else 100.0
            units = self.unit + ("es" if self.unit.endswith(("s", "ch", "sh", "x")) else "s")
            line = f"{self.desc:<7} {self.done}/{self.total} {units} ({share:.0f}%)"
            print(line + (f", {note}" if note else ""), file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
