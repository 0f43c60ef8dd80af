"""The HTML report of an explanation run: beeswarm-style summary, interaction heat map, Hasse diagram.

Figures are drawn with matplotlib (SVG, text escaped by matplotlib; feature names are drawn as plain text, never
parsed as mathtext, so ``$`` in a name is a dollar sign) and the page with jinja2 (autoescape on);
the Hasse diagram comes from :func:`brittle.explain.hasse.hasse_svg`, which escapes its labels.
"""

from __future__ import annotations

import io

import numpy as np

TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<title>brittle explain — {{ title }}</title>
<style>
body { font-family: Helvetica, Arial, sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }
table { border-collapse: collapse; } td, th { padding: 3px 10px; border-bottom: 1px solid #ddd; text-align: right; }
th:first-child, td:first-child { text-align: left; } .note { color: #555; font-size: 0.92em; }
figure { margin: 1.2em 0; } svg { max-width: 100%; height: auto; }
</style></head><body>
<h1>Explanation: {{ title }}</h1>
<p>Model <code>{{ summary.model }}</code> ({{ summary.model_type }}); explained output: <b>{{ summary.output }}</b>.
{{ summary.n_explained }} rows explained against {{ summary.n_background }} background rows with exact
interventional TreeSHAP{% if summary.interactions %} and order-2 Shapley–Taylor interactions{% endif %}.
Base value (mean output on the background): {{ "%.6g"|format(summary.base_value) }}; largest efficiency error
|base + Σφ − f(x)|: {{ "%.2g"|format(summary.efficiency_error) }}.</p>

<h2>Attributions</h2>
<figure>{{ beeswarm }}<figcaption class="note">One dot per explained row; colour: the feature's value (rank
within its column; grey: missing). Features by mean |φ|.</figcaption></figure>
<table><tr><th>feature</th><th>mean |φ|</th><th>mean φ</th></tr>
{% for row in importance %}<tr><td>{{ row.name }}</td><td>{{ "%.4g"|format(row.mean_abs) }}</td>
<td>{{ "%.4g"|format(row.mean) }}</td></tr>
{% endfor %}</table>

{% if heatmap %}<h2>Shapley–Taylor interactions</h2>
<figure>{{ heatmap }}<figcaption class="note">Mean |index| over the explained rows: main effects
v({i}) − v(∅) on the diagonal, pair indices φ<sub>ij</sub> off it.</figcaption></figure>
<table><tr><th>pair</th><th>mean |φ<sub>ij</sub>|</th></tr>
{% for p in top_pairs %}<tr><td>{{ p.pair }}</td><td>{{ "%.4g"|format(p.value) }}</td></tr>{% endfor %}
</table>{% endif %}

<h2>Consensus order of global importance</h2>
<p>{{ consensus.how }} Feature A is above feature B only if all {{ consensus.n_models }} agree (mean |φ|).
The consensus holds {{ consensus.cardinality }} of the {{ consensus.mean_order_pairs }} pairs the averaged
order ranks ({{ "%.0f"|format(100 * consensus.support) }}%).</p>
<figure>{{ hasse }}<figcaption class="note">Hasse diagram: an arrow A → B means every model ranks A above B,
with no feature in between.</figcaption></figure>
<p class="note">brittle {{ summary.brittle_version }} · {{ "%.1f"|format(summary.seconds) }} s ·
command: <code>{{ summary.command }}</code></p>
</body></html>
"""


def _svg(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg"):]


def beeswarm_svg(values: np.ndarray, data: np.ndarray, names: list[str], groups, top: int = 20) -> str:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    imp = np.abs(values).mean(axis=0)
    order = np.argsort(-imp)[:top][::-1]
    fig, ax = plt.subplots(figsize=(7.5, 0.35 * len(order) + 1.2))
    rng = np.random.default_rng(0)
    for row, g in enumerate(order):
        v = values[:, g]
        cols = groups[g] if groups else [g]
        x = data[:, cols[0]] if len(cols) == 1 else np.full(len(v), np.nan)
        color = np.full(len(v), np.nan)
        ok = ~np.isnan(x)
        if ok.sum() > 1:
            color[ok] = (np.argsort(np.argsort(x[ok])) / (ok.sum() - 1))
        # beeswarm-ish: spread dots vertically by their density in bins of φ
        bins = np.digitize(v, np.linspace(v.min(), v.max() + 1e-12, 40))
        offset = np.zeros(len(v))
        for b in np.unique(bins):
            idx = np.flatnonzero(bins == b)
            k = len(idx)
            offset[idx] = (np.arange(k) - (k - 1) / 2) / max(k, 8) * 0.8
        y = row + offset + rng.uniform(-0.02, 0.02, len(v))
        ax.scatter(v[~ok], y[~ok], s=8, c="#aaaaaa", linewidths=0)
        ax.scatter(v[ok], y[ok], s=8, c=color[ok], cmap="coolwarm", vmin=0, vmax=1, linewidths=0)
    ax.axvline(0, color="#888", lw=0.8)
    ax.set_yticks(range(len(order)), [names[g] for g in order], parse_math=False)  # "$" is text, not math
    ax.set_xlabel("Shapley value φ (interventional)")
    return _svg(fig)


def heatmap_svg(matrix: np.ndarray, names: list[str], top: int = 20) -> str:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    keep = np.argsort(-(np.abs(matrix).sum(axis=0)))[:top]
    M = matrix[np.ix_(keep, keep)]
    fig, ax = plt.subplots(figsize=(0.38 * len(keep) + 2.6, 0.38 * len(keep) + 1.8))
    im = ax.imshow(M, cmap="viridis")
    ax.set_xticks(range(len(keep)), [names[g] for g in keep], rotation=90, parse_math=False)
    ax.set_yticks(range(len(keep)), [names[g] for g in keep], parse_math=False)
    fig.colorbar(im, ax=ax, shrink=0.8, label="mean |index|")
    return _svg(fig)


def render_report(summary: dict, explanation, consensus, consensus_how: str) -> str:
    from jinja2 import Environment
    from markupsafe import Markup

    from .hasse import hasse_svg

    names = explanation.feature_names
    vals = explanation.values.sum(axis=1) if explanation.values.ndim == 3 else explanation.values
    imp = np.abs(vals).mean(axis=0)
    importance = [{"name": names[g], "mean_abs": float(imp[g]), "mean": float(vals[:, g].mean())}
                  for g in np.argsort(-imp)]
    heat, top_pairs = None, []
    if explanation.interactions is not None:
        P = np.abs(explanation.pair_index()).mean(axis=0)
        heat = Markup(heatmap_svg(P, names))
        iu = np.triu_indices(len(names), 1)
        best = np.argsort(-P[iu])[:10]
        top_pairs = [{"pair": f"{names[iu[0][b]]} × {names[iu[1][b]]}", "value": float(P[iu][b])} for b in best]
    env = Environment(autoescape=True)
    html = env.from_string(TEMPLATE).render(
        title=summary["model"], summary=summary, importance=importance,
        beeswarm=Markup(beeswarm_svg(vals, explanation.data, names, explanation.groups)),
        heatmap=heat, top_pairs=top_pairs,
        consensus={**consensus.summary(), "how": consensus_how},
        hasse=Markup(hasse_svg(consensus)))
    return html
