"""Hints wrap on words, never inside one (an 80-column terminal used to show `absen|t`)."""

from __future__ import annotations

import io

from rich.text import Text

from grader.report import make_console, wrap_words


def test_long_lines_break_at_spaces_and_keep_their_indent() -> None:
    line = "  got: 3 of 12 rows are absent, because the mask was applied after the softmax instead of before"
    parts = wrap_words(line, 40)
    assert all(len(p) <= 40 for p in parts) and len(parts) > 1
    assert " ".join(p.strip() for p in parts) == line.strip()  # no word split, none lost
    assert all(p.startswith("    ") for p in parts[1:])  # continuation: the line's indent plus two


def test_short_lines_and_long_words_are_left_alone() -> None:
    assert wrap_words("expected (2, 3), got (3, 2)", 80) == ["expected (2, 3), got (3, 2)"]
    word = "x" * 100
    assert wrap_words(f"a {word} b", 40) == ["a", f"  {word}", "  b"]


def test_on_an_80_column_console_no_word_is_cut() -> None:
    buf = io.StringIO()
    console = make_console(buf)
    console.width = 80
    hint = "the weights of a query whose keys are all blocked must be absent " * 3
    for part in wrap_words("      " + hint.strip(), console.width):
        console.print(Text(part))
    words = set(hint.split())
    for ln in buf.getvalue().splitlines():
        assert len(ln) <= 80 and all(w in words for w in ln.split()), ln
