"""Where a figure came from: the command and git commit that produced it.

Nothing in the report is cached, so every table and plot is stamped with the run that
computed it; a stale file then says so itself.
"""
from __future__ import annotations

import dataclasses
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None  # not a checkout, or no git: the stamp says "unknown commit"
    return done.stdout


@dataclasses.dataclass(frozen=True)
class Provenance:
    """command: how the run was started; commit: short hash or None; dirty: tracked files modified."""

    command: str
    commit: str | None
    dirty: bool

    @classmethod
    def current(cls, argv: list[str] | None = None) -> "Provenance":
        args = sys.argv[1:] if argv is None else list(argv)
        command = " ".join(["python -m analysis", *args])
        head = _git("rev-parse", "--short", "HEAD")
        status = _git("status", "--porcelain", "--untracked-files=no")
        return cls(command, head.strip() or None if head else None, bool(status and status.strip()))

    @property
    def revision(self) -> str:
        """``abc1234``, ``abc1234 + uncommitted changes`` or ``unknown commit``."""
        if self.commit is None:
            return "unknown commit"
        return f"{self.commit} + uncommitted changes" if self.dirty else self.commit

    def markdown(self) -> str:
        """One italic line for under a table or figure."""
        return f"*Produced by `{self.command}` at commit `{self.revision}`.*"

    def figure_note(self) -> str:
        """The same stamp, as plain text for a figure's footer."""
        return f"{self.command} @ {self.revision}"
