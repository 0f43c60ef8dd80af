"""Hasse diagrams of consensus partial orders as SVG: graphviz's ``dot`` when installed, else a pure-Python
layered layout. All text is escaped."""

from __future__ import annotations

import shutil
import subprocess
from html import escape

import numpy as np


def _dot_source(order, edges) -> str:
    def q(s: str) -> str:
        return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'

    lines = ["digraph hasse {", "  rankdir=TB;", '  node [shape=box, style="rounded", fontname="Helvetica"];']
    for g, name in enumerate(order.feature_names):
        style = ', style="rounded,dashed", color="#b04040"' if order.ambiguous[g] else ""
        lines.append(f"  n{g} [label={q(name)}{style}];")
    for g, h in edges:
        lines.append(f"  n{g} -> n{h};")
    lines.append("}")
    return "\n".join(lines)


def _graphviz(order, edges, timeout: float = 20.0) -> str | None:
    dot = shutil.which("dot")
    if dot is None:
        return None
    try:
        proc = subprocess.run([dot, "-Tsvg"], input=_dot_source(order, edges), capture_output=True, text=True,
                              timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    if proc.returncode != 0 or "<svg" not in proc.stdout:
        return None
    return proc.stdout[proc.stdout.index("<svg"):]


def _layered(order, edges, box_w: int = 130, box_h: int = 28, gap_x: int = 24, gap_y: int = 56) -> str:
    G = len(order.feature_names)
    level = order.levels()
    n_levels = int(level.max()) + 1 if G else 1
    layers = [list(np.flatnonzero(level == lv)) for lv in range(n_levels)]
    # order each layer by importance, then two barycentre sweeps to shorten edges
    imp = np.abs(order.mean_attribution)
    layers = [sorted(layer, key=lambda g: -imp[g]) for layer in layers]
    pos = {g: i for layer in layers for i, g in enumerate(layer)}
    parents = {h: [g for g, hh in edges if hh == h] for h in range(G)}
    for _ in range(2):
        for layer in layers[1:]:
            layer.sort(key=lambda h: np.mean([pos[p] for p in parents[h]]) if parents[h] else pos[h])
            for i, g in enumerate(layer):
                pos[g] = i
    width = max(len(layer) for layer in layers) * (box_w + gap_x) + gap_x
    height = n_levels * (box_h + gap_y) + gap_y - box_h
    xy = {}
    for lv, layer in enumerate(layers):
        offset = (width - len(layer) * (box_w + gap_x) + gap_x) / 2
        for i, g in enumerate(layer):
            xy[g] = (offset + i * (box_w + gap_x), gap_y / 2 + lv * (box_h + gap_y))
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
           f'viewBox="0 0 {width:.0f} {height:.0f}" font-family="Helvetica, Arial, sans-serif" font-size="12">',
           '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
           'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#555"/></marker></defs>']
    for g, h in edges:
        (x1, y1), (x2, y2) = xy[g], xy[h]
        out.append(f'<line x1="{x1 + box_w / 2:.1f}" y1="{y1 + box_h:.1f}" x2="{x2 + box_w / 2:.1f}" '
                   f'y2="{y2:.1f}" stroke="#555" stroke-width="1.2" marker-end="url(#arrow)"/>')
    for g, name in enumerate(order.feature_names):
        x, y = xy[g]
        amb = bool(order.ambiguous[g])
        dash = ' stroke-dasharray="4 3"' if amb else ""
        label = name if len(name) <= 18 else name[:17] + "…"
        out.append(f'<g><title>{escape(name)}{" (ambiguous sign)" if amb else ""}</title>'
                   f'<rect x="{x:.1f}" y="{y:.1f}" width="{box_w}" height="{box_h}" rx="6" '
                   f'fill="{"#fbeaea" if amb else "#eef3fb"}" stroke="{"#b04040" if amb else "#4060a0"}"'
                   f'{dash}/>'
                   f'<text x="{x + box_w / 2:.1f}" y="{y + box_h / 2 + 4:.1f}" text-anchor="middle">'
                   f'{escape(label)}</text></g>')
    out.append("</svg>")
    return "\n".join(out)


def hasse_svg(order, engine: str = "auto") -> str:
    """The Hasse diagram of ``order`` (a :class:`~brittle.explain.consensus.PartialOrder`) as an SVG string.

    More important players are drawn above; an arrow g → h means g is more important than h with nothing
    in between; ambiguous players (attribution sign differs across models) have a dashed red border.
    ``engine``: "auto" (graphviz if its ``dot`` is on PATH), "graphviz" or "python".
    """
    from ..errors import InputError

    if engine not in ("auto", "graphviz", "python"):
        raise InputError(f"engine={engine!r} is not one of auto, graphviz, python", "pass engine='auto'")
    edges = order.hasse_edges()
    if engine in ("auto", "graphviz"):
        svg = _graphviz(order, edges)
        if svg is not None:
            return svg
        if engine == "graphviz":
            raise InputError("graphviz's dot program is not installed", "install graphviz or use engine='python'")
    return _layered(order, edges)
