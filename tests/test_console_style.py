"""The console's colours, read from its stylesheet: every pair of text and background it uses meets WCAG 2's
4.5:1 contrast for normal text."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

BASE = (
    Path(__file__).resolve().parent.parent / "tailor" / "app" / "http" / "console" / "templates" / "base.html"
)


def _colours() -> dict[str, str]:
    root = re.search(r":root\s*\{([^}]*)\}", BASE.read_text(encoding="utf-8"))
    assert root is not None, "the stylesheet's colours are in :root"
    return dict(re.findall(r"--([\w-]+):\s*(#[0-9a-fA-F]{6})", root.group(1)))


def _luminance(hex_colour: str) -> float:
    def channel(c: int) -> float:
        s = c / 255
        return s / 12.92 if s <= 0.03928 else ((s + 0.055) / 1.055) ** 2.4

    r, g, b = (int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))
    return 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b)


def contrast(a: str, b: str) -> float:
    la, lb = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def test_contrast_formula_on_known_pairs() -> None:
    assert contrast("#000000", "#ffffff") == pytest.approx(21.0)
    assert contrast("#777777", "#ffffff") == pytest.approx(4.48, abs=0.01)  # the classic near miss


# Text colour on background colour, as the stylesheet pairs them (a button's white text on the accent).
PAIRS = [
    ("ink", "bg"), ("ink", "panel"), ("ink", "mark"), ("muted", "bg"), ("muted", "panel"), ("muted", "mark"),
    ("accent", "bg"), ("accent", "panel"), ("ok", "bg"), ("ok", "panel"), ("warn", "bg"), ("warn", "panel"),
    ("bad", "bg"), ("bad", "panel"), ("white", "accent"), ("white", "bad"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "background"), PAIRS)
def test_every_text_and_background_pair_reads_at_4_5_to_1(text: str, background: str) -> None:
    colours = {**_colours(), "white": "#ffffff"}
    ratio = contrast(colours[text], colours[background])
    assert ratio >= 4.5, f"{text} on {background}: {ratio:.2f}:1"
