"""`python -m edge_runtime complete BUNDLE`: type, and watch the suggestions follow each key.

The terminal goes to cbreak mode (keys arrive one at a time, no echo) with its
signal keys off, and is always restored on the way out. Ctrl-C is read as a
key, not taken as SIGINT: a program started with SIGINT ignored (a background
job of a script) would otherwise never see it, and the terminal would drop it.
Two lines are redrawn on every key: what has been typed, and the suggestions
for the word being typed.

    letters        type (upper case is folded to lower case)
    Tab            accept the first suggestion

A word the user finishes that the bundle's lexicon lacks goes to their own
dictionary (edge_runtime/userwords.py) and is suggested from then on, also
after a restart. Suggestions the character model made up are marked (new).
    Backspace      take back a letter (the model's state comes off a stack)
    space, Enter   end the word (Enter also ends the line)
    Ctrl-C, Ctrl-D leave
"""
from __future__ import annotations

import os
import sys
import termios
import tty

from edge_runtime.autocomplete import Autocomplete
from edge_runtime.userwords import UserWordsError

CTRL_C, CTRL_D, TAB, BACKSPACES, ENTERS = "\x03", "\x04", "\t", ("\x7f", "\x08"), ("\r", "\n")
CLEAR_LINE = "\r\x1b[K"
UP = "\x1b[1A"


class TypingScreen:
    """The two-line display and the key handling, apart from the terminal so it can be tested."""

    def __init__(self, typing: Autocomplete, k: int = 3, write=None):
        self.typing, self.k = typing, k
        self.line = ""  # finished words of the current line, with their spaces
        self.message = ""
        self.write = write or (lambda text: (sys.stdout.write(text), sys.stdout.flush()))

    def key(self, char: str) -> bool:
        """Handle one key; False when it is time to leave."""
        typing, self.message = self.typing, ""
        if char in (CTRL_C, CTRL_D):
            return False
        if char == TAB:
            top = typing.suggest(1)
            if top:
                self._end_word(top[0][0])
            else:
                self.message = "no suggestion to accept"
        elif char in BACKSPACES:
            if not typing.backspace() and self.line:
                self._reopen_last_word()
        elif char == " ":
            self._end_word(typing.prefix)
        elif char in ENTERS:
            self._end_word(typing.prefix)
            self.write(CLEAR_LINE + "> " + self.line.rstrip() + "\r\n")
            self.line = ""
        elif char.lower() in typing.vocabulary.letters and len(char) == 1:
            typing.feed(char.lower())
        else:
            self.message = f"{char!r} is not a letter the model knows ({typing.vocabulary.letters})"
        self.draw()
        return True

    def _end_word(self, word: str) -> None:
        if word:
            self.line += word + " "
            try:
                self.typing.accept(word)
            except UserWordsError as e:  # a read-only disk must not end the session: say so and go on
                self.message = str(e)
        self.typing.reset()

    def _reopen_last_word(self) -> None:
        """Backspace at a word's start: remove the space and type the previous word back in."""
        self.line = self.line[:-1]
        cut = self.line.rfind(" ") + 1
        word, self.line = self.line[cut:], self.line[:cut]
        for c in word:
            self.typing.feed(c)

    def suggestion_text(self) -> str:
        if self.message:
            return self.message
        words = self.typing.suggest(self.k)
        letters = self.typing.next_chars(3)
        shown = " | ".join(f"{s.word}{' (new)' if s.new else ''} {s.probability:.0%}" for s in words) or "-"
        end = self.typing.vocabulary.end
        following = " ".join(f"{'<end>' if c == end else c} {p:.0%}" for c, p in letters)
        return f"Tab: {shown}    next: {following}"

    def draw(self) -> None:
        typed = "> " + self.line + self.typing.prefix
        self.write(CLEAR_LINE + typed + "\r\n" + CLEAR_LINE + "  " + self.suggestion_text()
                   + UP + "\r" + (f"\x1b[{len(typed)}C" if typed else ""))


def run_terminal(typing: Autocomplete, k: int = 3, fd: int | None = None) -> int:
    """Read keys from the terminal until Ctrl-C/Ctrl-D; the terminal settings are always restored."""
    fd = sys.stdin.fileno() if fd is None else fd
    if not os.isatty(fd):
        print("error: complete is interactive and needs a terminal on stdin", file=sys.stderr)
        return 2
    saved = termios.tcgetattr(fd)
    screen = TypingScreen(typing, k)
    try:
        tty.setcbreak(fd)
        mode = termios.tcgetattr(fd)
        mode[3] &= ~termios.ISIG  # lflag: Ctrl-C, Ctrl-Z, Ctrl-\ arrive as keys
        termios.tcsetattr(fd, termios.TCSANOW, mode)
        screen.write("type a word; Tab accepts the first suggestion, Backspace, space/Enter ends a word, "
                     "Ctrl-C leaves\r\n")
        screen.draw()
        while True:
            data = os.read(fd, 64)
            if not data:
                break
            if not all(screen.key(c) for c in data.decode("utf-8", "replace")):
                break
    except KeyboardInterrupt:
        pass  # SIGINT from elsewhere (kill -INT): leave the same way
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
        screen.write("\r\n\x1b[K\r\nbye\r\n")
    return 0
