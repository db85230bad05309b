"""Untrusted text made safe to store and to write: the one place that decides how."""

from __future__ import annotations

import re

LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def utf8_safe(text: str) -> str:
    """``text`` with lone surrogates (from JSON escapes like ``\\ud800``) as U+FFFD, so UTF-8 can carry it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return LONE_SURROGATE.sub("\ufffd", text)
    return text


def printable(text: str, keep_lines: bool = False) -> str:
    """Untrusted text as it may be printed to a terminal: control characters (ANSI escapes, carriage
    returns, bells, ...) and lone surrogates written as escapes, so no text can repaint the screen, set
    the window title or fake a line."""
    if text.isprintable():  # the usual case, at C speed (a lone surrogate is not printable)
        return text
    keep = "\n\t" if keep_lines else "\t"
    return "".join(ch if ch.isprintable() or ch in keep else _escaped(ch) for ch in text)


def _escaped(ch: str) -> str:
    return ch.encode("unicode_escape").decode()
