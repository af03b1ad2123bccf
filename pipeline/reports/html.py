"""The self-contained HTML report: every image inlined (opens offline, mails as one file)."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from pipeline.io.images import as_rgb, png_bytes


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def strip(
    frames: np.ndarray,
    labels: list[str],
    scale: int = 2,
    lead: list[tuple[np.ndarray, str]] | None = None,
) -> bytes:
    """A row of frames (uint8 [A, H, W, 3] or grey [A, H, W, 1]) with a caption under each;
    ``lead``: extra captioned images first (the real tile, its heatmap)."""
    cells = [
        (as_rgb(img), text) for img, text in [*(lead or []), *zip(frames, labels, strict=True)]
    ]
    h, w = frames.shape[1] * scale, frames.shape[2] * scale
    pad, cap = 4, 14
    out = Image.new("RGB", (len(cells) * (w + pad) + pad, h + cap + 2 * pad), "white")
    draw = ImageDraw.Draw(out)
    for i, (img, text) in enumerate(cells):
        x = pad + i * (w + pad)
        out.paste(Image.fromarray(img).resize((w, h), Image.NEAREST), (x, pad))
        draw.text((x + 2, pad + h + 1), text, fill="black")
    return png_bytes(np.asarray(out))


@dataclass
class DirectionSection:
    name: str
    summary: str
    strips: list[tuple[str, bytes]] = field(default_factory=list)  # caption, PNG
    effects_png: bytes | None = None
    effects_table: pd.DataFrame | None = None


@dataclass
class Report:
    title: str
    provenance: dict
    overview: list[tuple[str, str]]  # label, value
    verdicts_table: pd.DataFrame
    directions_table: pd.DataFrame
    prediction_png: bytes | None
    sections: list[DirectionSection]
    bias_tables: list[tuple[str, pd.DataFrame]]
    slides: list[bytes]
    notes: list[str] = field(default_factory=list)
    probes_png: bytes | None = None
    probe_tables: list[tuple[str, pd.DataFrame]] = field(default_factory=list)


CSS = """
body{font-family:system-ui,sans-serif;margin:24px;max-width:1200px;color:#222}
h1{font-size:22px}h2{font-size:18px;border-bottom:1px solid #ccc;padding-bottom:4px}
h3{font-size:15px}table{border-collapse:collapse;font-size:12px;margin:8px 0}
td,th{border:1px solid #ddd;padding:3px 6px;text-align:right}th{background:#f4f4f4}
.kv td:first-child{text-align:left;font-weight:600}.muted{color:#777;font-size:12px}
.slides img{margin:4px}img{max-width:100%}
.reasons{font-size:13px;margin-top:0}
"""

SCRIPT = """
window.addEventListener('load', () => {
  const imgs = [...document.images];
  document.body.dataset.imagesTotal = imgs.length;
  document.body.dataset.imagesLoaded = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
});
"""


def _table(df: pd.DataFrame) -> str:
    return df.to_html(index=False, float_format=lambda v: f"{v:.3g}", na_rep="–", border=0)


VERDICT_COLOUR = {"supported": "#1a7f37", "weak": "#9a6700", "not_supported": "#cf222e"}
STATUS_BG = {"pass": "#dafbe1", "weak": "#fff8c5", "fail": "#ffebe9", "n/a": "#ffffff"}


def _verdicts(df: pd.DataFrame) -> str:
    """The verdicts: one row per direction, each gate's figure coloured by its status, then
    each direction's reasons as a list."""
    from pipeline.reports.verdicts import GATES

    gates = [g for g in GATES if f"gate_{g.name}" in df.columns]
    head = "".join(f"<th>{html.escape(g.label)}</th>" for g in gates)
    rows, why = [], []
    for r in df.to_dict("records"):
        v, name = str(r["verdict"]), html.escape(str(r["direction"]))
        cells = []
        for g in gates:
            value = r[f"gate_{g.name}"]
            status = g.status(None if pd.isna(value) else float(value))
            shown = "–" if pd.isna(value) else f"{value:.3g}"
            cells.append(f"<td style='background:{STATUS_BG[status]}'>{shown}</td>")
        style = f"color:{VERDICT_COLOUR.get(v, '#222')};font-weight:600"
        rows.append(
            f"<tr><td><code>{name}</code></td><td style='{style}'>"
            f"{html.escape(v.replace('_', ' '))}</td>{''.join(cells)}</tr>"
        )
        reasons = [x for x in str(r["reasons"]).split("; ") if x]
        items = (
            "".join(f"<li>{html.escape(x)}</li>" for x in reasons) or "<li>every gate passed</li>"
        )
        why.append(
            f"<p><code>{name}</code>: <span style='{style}'>{html.escape(v)}</span></p>"
            f"<ul class='reasons'>{items}</ul>"
        )
    table = (
        f"<table class='verdicts'><tr><th>direction</th><th>verdict</th>{head}</tr>"
        f"{''.join(rows)}</table>"
    )
    return table + "".join(why)


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="{data_uri(png)}">'


def render(r: Report) -> str:
    """The report as one HTML string."""
    e = html.escape
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{e(r.title)}</title>",
        f"<style>{CSS}</style><script>{SCRIPT}</script></head><body>",
        f"<h1>{e(r.title)}</h1>",
        "<table class='kv'>",
    ]
    parts += [f"<tr><td>{e(k)}</td><td>{e(str(v))}</td></tr>" for k, v in r.overview]
    parts.append("</table>")
    parts.append(f"<p class='muted'>provenance: {e(str(r.provenance))}</p>")
    parts += [
        "<h2>Verdicts</h2>",
        "<p>Whether each direction's explanation is supported by "
        "the generator, the inversions and the direction itself, and why not "
        "(docs/reports.md, Verdicts).</p>",
        _verdicts(r.verdicts_table),
    ]
    parts += [f"<p class='muted'>{e(n)}</p>" for n in r.notes]
    parts += ["<h2>Directions</h2>", _table(r.directions_table)]
    if r.prediction_png:
        parts += [
            "<h3>Prediction along each direction</h3>",
            _img(r.prediction_png, "prediction vs alpha"),
        ]
    for s in r.sections:
        parts += [f"<h2>Direction <code>{e(s.name)}</code></h2>", f"<p>{e(s.summary)}</p>"]
        for caption, png in s.strips:
            parts += [f"<div class='muted'>{e(caption)}</div>", _img(png, caption)]
        if s.effects_png:
            parts += ["<h3>Feature effects</h3>", _img(s.effects_png, f"effects {s.name}")]
        if s.effects_table is not None:
            parts.append(_table(s.effects_table))
    parts.append("<h2>Bias: site, scanner, stain</h2>")
    for caption, df in r.bias_tables:
        parts += [f"<h3>{e(caption)}</h3>", _table(df)]
    if r.probes_png or r.probe_tables:
        parts += [
            "<h2>Probes: the classifier on perturbed real tiles (no generator)</h2>",
            "<p>Mean change of the explained class's logit when each selected tile is "
            "changed in pixel space (docs/reports.md, Probes).</p>",
        ]
        if r.probes_png:
            parts.append(_img(r.probes_png, "dose-response of the probes"))
        for caption, df in r.probe_tables:
            parts += [f"<h3>{e(caption)}</h3>", _table(df)]
    if r.slides:
        parts += ["<h2>Slides: tile predictions</h2><div class='slides'>"]
        parts += [_img(png, "slide overview") for png in r.slides]
        parts.append("</div>")
    parts.append("</body></html>")
    return "\n".join(parts)
