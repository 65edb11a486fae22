"""Streaming an answer to the terminal: Markdown with rich where it is a terminal, plain text elsewhere.

Why blocks: re-rendering a whole growing answer in a ``Live`` region breaks once the answer is taller
than the screen (rich cannot redraw what scrolled away). Finished blocks (split at blank lines outside
code fences) are printed once as Markdown; only the block being written lives in the ``Live`` region.
"""

from __future__ import annotations

import sys
from types import TracebackType

from rich.console import Console
from rich.live import Live
from rich.markdown import Markdown
from rich.text import Text


def split_done(text: str) -> tuple[str, str]:
    """(finished blocks, the block still being written): split at the last blank line outside a code fence."""
    fenced = False
    cut = -1
    pos = 0
    for line in text.splitlines(keepends=True):
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
        pos += len(line)
        if not fenced and line.strip() == "" and pos < len(text):
            cut = pos
    if cut <= 0:
        return "", text
    return text[:cut], text[cut:]


class AnswerWriter:
    """``with AnswerWriter(console, markdown) as w: w.feed(piece)``; closes cleanly on Ctrl-C too."""

    def __init__(self, console: Console, markdown: bool) -> None:
        self.console = console
        self.markdown = markdown and console.is_terminal
        self.pending = ""
        self.text = ""
        self._live: Live | None = None

    def __enter__(self) -> AnswerWriter:
        if self.markdown:
            self._live = Live(
                Text(""), console=self.console, refresh_per_second=12, transient=True, vertical_overflow="visible"
            )
            self._live.start()
        return self

    def feed(self, piece: str) -> None:
        self.text += piece
        if not self.markdown:
            self.console.file.write(piece)
            self.console.file.flush()
            return
        self.pending += piece
        done, self.pending = split_done(self.pending)
        assert self._live is not None
        if done.strip():
            self._live.console.print(Markdown(done))
        self._live.update(Markdown(self.pending) if self.pending.strip() else Text(""))

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._live is not None:
            self._live.update(Text(""))
            self._live.stop()
            if self.pending.strip():
                self.console.print(Markdown(self.pending))
        elif self.text and not self.text.endswith("\n"):
            self.console.file.write("\n")
            self.console.file.flush()


def make_console() -> Console:
    return Console(file=sys.stdout, highlight=False, soft_wrap=False)
