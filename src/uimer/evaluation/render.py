"""Showing attributions: a coloured terminal heatmap (rich) and a self-contained HTML page.

Colours are diverging: red for scores that support the target, blue for scores against it, intensity
|score| / scale, where the scale is the largest |score| shown together (one sentence, or both rows of a case
study, so the two models are comparable). Gold rationale words are underlined / outlined.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from rich.console import Group
from rich.style import Style
from rich.table import Table
from rich.text import Text

POSITIVE = (214, 39, 40)
NEGATIVE = (31, 119, 180)
WHITE = (255, 255, 255)


@dataclass
class TokenExplanation:
    """One model's explanation of one input, ready to show."""

    tokens: list[str]
    scores: list[float]  # NaN for tokens without a score (truncated)
    model_name: str
    method: str
    unit: str
    prediction: str
    probability: float | None = None
    rationale: list[int] | None = None
    gold_label: str | None = None
    a_r: float | None = None
    a_n: float | None = None
    a_note: str = ""
    pair_start: int | None = None  # first hypothesis token (pairs)
    extra: dict = field(default_factory=dict)

    @property
    def correct(self) -> bool | None:
        return None if self.gold_label is None else self.prediction == self.gold_label

    def as_dict(self) -> dict:
        return {
            "model": self.model_name, "method": self.method, "unit": self.unit, "tokens": self.tokens,
            "scores": [None if math.isnan(s) else s for s in self.scores], "rationale": self.rationale,
            "prediction": self.prediction, "probability": self.probability, "gold_label": self.gold_label,
            "a_r": self.a_r, "a_n": self.a_n, "a_note": self.a_note, **self.extra,
        }


def scale_of(explanations: Sequence[TokenExplanation]) -> float:
    """The largest |score| over all explanations (1 when every score is 0 or missing)."""
    values = [abs(s) for e in explanations for s in e.scores if not math.isnan(s)]
    top = max(values, default=0.0)
    return top if top > 0 else 1.0


def colour(score: float, scale: float) -> tuple[int, int, int]:
    """White blended towards red (positive) or blue (negative) by |score| / scale."""
    if math.isnan(score):
        return (230, 230, 230)
    alpha = min(abs(score) / scale, 1.0) if scale > 0 else 0.0
    target = POSITIVE if score >= 0 else NEGATIVE
    return tuple(round(w + alpha * (t - w)) for w, t in zip(WHITE, target, strict=True))  # type: ignore[return-value]


def _text_colour(rgb: tuple[int, int, int]) -> str:
    luminance = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]
    return "black" if luminance > 140 else "white"


def format_score(score: float) -> str:
    return "—" if math.isnan(score) else f"{score:.4g}"


def heatmap_text(explanation: TokenExplanation, scale: float) -> Text:
    """The sentence with every token on its score's colour; rationale tokens underlined."""
    text = Text()
    for i, (token, score) in enumerate(zip(explanation.tokens, explanation.scores, strict=True)):
        if explanation.pair_start is not None and i == explanation.pair_start:
            text.append(" ║ ", style="dim")
        elif i:
            text.append(" ")
        rgb = colour(score, scale)
        is_rationale = bool(explanation.rationale and explanation.rationale[i])
        style = Style(bgcolor=f"rgb({rgb[0]},{rgb[1]},{rgb[2]})", color=_text_colour(rgb), underline=is_rationale,
                      bold=is_rationale)
        text.append(f" {token} ", style=style)
    return text


def _prediction_line(e: TokenExplanation) -> Text:
    line = Text()
    line.append(f"{e.model_name}", style="bold")
    line.append(f"  [{e.method}]  prediction: ")
    mark = "" if e.correct is None else ("✓ " if e.correct else "✗ ")
    line.append(f"{mark}{e.prediction}", style="green" if e.correct else ("red" if e.correct is False else "bold"))
    if e.probability is not None:
        line.append(f" (p = {e.probability:.3f})")
    if e.gold_label is not None:
        line.append(f"  gold: {e.gold_label}")
    if e.a_r is not None and e.a_n is not None:
        line.append(f"  a_R = {format_score(e.a_r)}  a_N = {format_score(e.a_n)}", style="bold")
        if e.a_note:
            line.append(f" ({e.a_note})", style="dim")
    return line


def explanation_renderable(explanation: TokenExplanation, scale: float | None = None) -> Group:
    """Prediction line, heatmap and a token | score | rationale table."""
    scale = scale_of([explanation]) if scale is None else scale
    table = Table(show_edge=False, pad_edge=False, box=None)
    table.add_column("#", justify="right", style="dim")
    table.add_column("token")
    table.add_column(f"score ({explanation.unit})", justify="right")
    table.add_column("", no_wrap=True)
    if explanation.rationale is not None:
        table.add_column("rationale", justify="center")
    for i, (token, score) in enumerate(zip(explanation.tokens, explanation.scores, strict=True)):
        rgb = colour(score, scale)
        bar_len = 0 if math.isnan(score) else round(12 * min(abs(score) / scale, 1.0))
        bar = Text("█" * bar_len, style=f"rgb({rgb[0]},{rgb[1]},{rgb[2]})")
        row = [str(i), token, format_score(score), bar]
        if explanation.rationale is not None:
            row.append("●" if explanation.rationale[i] else "")
        table.add_row(*row)
    return Group(_prediction_line(explanation), heatmap_text(explanation, scale), table)


def case_study_table(explanations: Sequence[TokenExplanation], title: str | None = None) -> Table:
    """Table 3 style, transposed so any sentence fits a terminal: one row per token (rationale words bold
    and underlined), one column per model, then a_R, a_N and the prediction."""
    first = explanations[0]
    scale = scale_of(explanations)
    table = Table(title=title)
    table.add_column("token", no_wrap=True)
    table.add_column("R", justify="center", no_wrap=True)  # gold rationale, readable without colour too
    for e in explanations:
        table.add_column(e.model_name, justify="right", no_wrap=True)
    for i, token in enumerate(first.tokens):
        marked = bool(first.rationale and first.rationale[i])
        cells: list[Text | str] = [Text(token, style="bold underline" if marked else ""), "•" if marked else ""]
        for e in explanations:
            rgb = colour(e.scores[i], scale)
            cells.append(Text(format_score(e.scores[i]),
                              style=Style(bgcolor=f"rgb({rgb[0]},{rgb[1]},{rgb[2]})", color=_text_colour(rgb))))
        table.add_row(*cells)
    table.add_section()
    table.add_row("a_R", "", *("—" if e.a_r is None else format_score(e.a_r) for e in explanations))
    table.add_row("a_N", "", *("—" if e.a_n is None else format_score(e.a_n) for e in explanations))
    table.add_row("prediction", "", *(("" if e.correct is None else ("✓ " if e.correct else "✗ ")) + e.prediction
                                  for e in explanations))
    return table


# -- HTML -----------------------------------------------------------------------------------------------
_CSS = """
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 24px; color: #222; }
h1 { font-size: 20px; margin: 0 0 12px; }
section { margin: 0 0 28px; }
.meta { margin: 4px 0 10px; font-size: 14px; }
.meta .ok { color: #2e7d32; } .meta .bad { color: #c62828; }
.heatmap { font-size: 20px; line-height: 2.2; }
.tok { padding: 3px 5px; margin: 0 1px; border-radius: 4px; }
.tok.rationale { outline: 2px solid #333; font-weight: 600; }
.sep { color: #999; margin: 0 6px; }
table.scores { border-collapse: collapse; font-size: 13px; margin-top: 10px; }
table.scores th, table.scores td { border: 1px solid #ddd; padding: 2px 8px; text-align: left; }
table.scores td.num { text-align: right; font-variant-numeric: tabular-nums; }
.legend { font-size: 13px; color: #555; }
.swatch { display: inline-block; width: 14px; height: 14px; vertical-align: middle; border-radius: 3px; }
"""


def _rgb_css(rgb: tuple[int, int, int]) -> str:
    return f"rgb({rgb[0]},{rgb[1]},{rgb[2]})"


def _section_html(e: TokenExplanation, scale: float) -> str:
    esc = html.escape
    verdict = ""
    if e.correct is not None:
        verdict = f' <span class="{"ok" if e.correct else "bad"}">{"✓" if e.correct else "✗"}</span>'
    meta = [f"<b>{esc(e.model_name)}</b> · method <code>{esc(e.method)}</code> · prediction{verdict} "
            f"<b>{esc(e.prediction)}</b>"]
    if e.probability is not None:
        meta.append(f" (p = {e.probability:.3f})")
    if e.gold_label is not None:
        meta.append(f" · gold <b>{esc(e.gold_label)}</b>")
    if e.a_r is not None and e.a_n is not None:
        meta.append(f" · a<sub>R</sub> = {format_score(e.a_r)}, a<sub>N</sub> = {format_score(e.a_n)}")
        if e.a_note:
            meta.append(f" <span class=\"legend\">({esc(e.a_note)})</span>")
    spans = []
    rows = []
    for i, (token, score) in enumerate(zip(e.tokens, e.scores, strict=True)):
        if e.pair_start is not None and i == e.pair_start:
            spans.append('<span class="sep">‖</span>')
        rgb = colour(score, scale)
        is_rationale = bool(e.rationale and e.rationale[i])
        cls = "tok rationale" if is_rationale else "tok"
        shown = format_score(score)
        spans.append(f'<span class="{cls}" style="background:{_rgb_css(rgb)};color:{_text_colour(rgb)}" '
                     f'title="{esc(shown)}" data-score="{esc(shown)}">{esc(token)}</span>')
        rationale_cell = f"<td>{'●' if is_rationale else ''}</td>" if e.rationale is not None else ""
        rows.append(f'<tr><td class="num">{i}</td><td>{esc(token)}</td><td class="num">{esc(shown)}</td>'
                    f"{rationale_cell}</tr>")
    header = "<tr><th>#</th><th>token</th><th>score (" + esc(e.unit) + ")</th>"
    header += "<th>rationale</th></tr>" if e.rationale is not None else "</tr>"
    return (f'<section><p class="meta">{"".join(meta)}</p><div class="heatmap">{" ".join(spans)}</div>'
            f'<table class="scores">{header}{"".join(rows)}</table></section>')


def explanations_html(explanations: Sequence[TokenExplanation], title: str = "uimer explain",
                      shared_scale: bool = True) -> str:
    """A self-contained page (inline CSS, no scripts or external resources); every token is escaped."""
    scale = scale_of(explanations)
    sections = [_section_html(e, scale if shared_scale else scale_of([e])) for e in explanations]
    legend = (f'<p class="legend"><span class="swatch" style="background:{_rgb_css(POSITIVE)}"></span> supports the '
              f'target &nbsp; <span class="swatch" style="background:{_rgb_css(NEGATIVE)}"></span> against it '
              f"&nbsp; intensity = |score| / {scale:.4g}; outlined = gold rationale</p>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
            f"<h1>{html.escape(title)}</h1>{legend}{''.join(sections)}</body></html>\n")
