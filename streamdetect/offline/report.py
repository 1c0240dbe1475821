"""The evaluation's pictures: an ROC curve with the score histograms (roc.png), and an HTML page
(report.html) with the summary and sample input/regenerated pairs, their captions and scores.
The page is self-contained (thumbnails inlined) apart from roc.png beside it."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any, Sequence

from PIL import Image

from streamdetect.offline.items import LABEL_NAMES, Scored

THUMB = 160


def write_roc_png(path: Path, scores: Sequence[float], labels: Sequence[int], threshold: float) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display on servers
    import matplotlib.pyplot as plt
    import numpy as np

    from streamdetect.detector.metrics import auroc, confusion, roc

    s, y = np.asarray(scores, dtype=float), np.asarray(labels)
    fig, (ax_roc, ax_hist) = plt.subplots(1, 2, figsize=(10, 4.2))
    if np.any(y == 0) and np.any(y == 1):
        fpr, tpr, _ = roc(s, y)
        ax_roc.plot(fpr, tpr, drawstyle="steps-post", label=f"MirrorCheck (AUROC {auroc(s, y):.3f})")
        point = confusion(s, y, threshold)
        ax_roc.plot([point["fpr"]], [point["tpr"]], "o", color="crimson", label=f"threshold {threshold:.4f}")
    ax_roc.plot([0, 1], [0, 1], ":", color="grey", label="chance")
    ax_roc.set(xlabel="false-positive rate (clean flagged)", ylabel="true-positive rate (adversarial flagged)",
               title="ROC: flag when score < threshold", xlim=(0, 1), ylim=(0, 1.01))
    ax_roc.legend(loc="lower right")
    bins = np.linspace(min(s.min(), threshold), max(s.max(), threshold), 30)
    for label, colour in ((0, "tab:green"), (1, "tab:red")):
        if np.any(y == label):
            ax_hist.hist(s[y == label], bins=bins, alpha=0.6, color=colour,
                         label=f"{LABEL_NAMES[label]} (n={int(np.sum(y == label))})")
    ax_hist.axvline(threshold, color="crimson", linestyle="--", label="threshold")
    ax_hist.set(xlabel="score (mean cosine similarity)", ylabel="items", title="Scores by label")
    ax_hist.yaxis.get_major_locator().set_params(integer=True)
    ax_hist.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def samples(scored: Sequence[Scored], per_class: int) -> list[Scored]:
    """Up to ``per_class`` items of each label, spread evenly over that label's score range."""
    picked: list[Scored] = []
    for label in (0, 1):
        ranked = sorted((s for s in scored if s.item.label == label), key=lambda s: s.score)
        if len(ranked) <= per_class:
            picked += ranked
        else:
            step = (len(ranked) - 1) / max(per_class - 1, 1)
            picked += [ranked[round(k * step)] for k in range(per_class)]
    return picked


def write_html(path: Path, scored: Sequence[Scored], summary: dict[str, Any], threshold: float,
               per_class: int = 6) -> None:
    rows = "\n".join(_sample_row(s, threshold) for s in samples(scored, per_class))
    keys = ("auroc", "accuracy", "tpr", "fpr", "precision", "tpr_at_1pct_fpr", "threshold", "threshold_mode",
            "tp", "fp", "tn", "fn", "n_clean", "n_adversarial", "mode", "profile")
    table = "\n".join(f"<tr><th>{k}</th><td>{html.escape(_fmt(summary.get(k)))}</td></tr>" for k in keys
                      if k in summary)
    path.write_text(f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>MirrorCheck evaluation</title>
<style>
body {{ font-family: sans-serif; margin: 2em; }} table {{ border-collapse: collapse; }}
td, th {{ border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; }}
.wrong {{ background: #fde2e2; }} img.thumb {{ width: {THUMB}px; image-rendering: pixelated; }}
</style></head><body>
<h1>MirrorCheck evaluation</h1>
<h2>Summary</h2><table>{table}</table>
<h2>ROC and score distribution</h2><img src="roc.png" alt="ROC curve and score histograms">
<h2>Sample pairs</h2>
<p>Flagged as adversarial when score &lt; {threshold:.4f}. Rows in red are misclassified.</p>
<table><tr><th>item</th><th>input</th><th>regenerated</th><th>caption</th><th>score</th><th>per encoder</th></tr>
{rows}
</table></body></html>
""")


def _sample_row(s: Scored, threshold: float) -> str:
    flagged = s.score < threshold
    decision = "adversarial" if flagged else "clean"
    css = "" if flagged == bool(s.item.label) else ' class="wrong"'
    regen = _thumb(s.regenerated) if s.regenerated else "<em>not kept</em>"
    per_encoder = "<br>".join(f"{html.escape(k)}: {v:.4f}" for k, v in sorted(s.scores.items()))
    return (f"<tr{css}><td>{html.escape(s.item.name)}<br>label: {LABEL_NAMES[s.item.label]}<br>"
            f"decision: {decision}</td><td>{_thumb(s.item.input)}</td><td>{regen}</td>"
            f"<td>{html.escape(s.caption) or '<em>none (precomputed regeneration)</em>'}</td>"
            f"<td>{s.score:.4f}</td><td>{per_encoder}</td></tr>")


def _thumb(path: Path) -> str:
    with Image.open(path) as im:
        image = im.convert("RGB")
    image.thumbnail((THUMB, THUMB))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    data = base64.b64encode(buffer.getvalue()).decode()
    return f'<img class="thumb" src="data:image/png;base64,{data}" alt="{html.escape(path.name)}">'


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "n/a" if value is None else str(value)
