"""Headless matplotlib figures as PNG bytes (local or s3:// writers take bytes), one look
for every plot the project writes: evaluate's accuracy_latency.png, tune's pareto.png."""

from __future__ import annotations

import io


def axes():
    """A new (figure, axes) on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(7, 4.5), dpi=110)


def png(fig, ax) -> bytes:
    """Grid, legend and tight layout; the figure as PNG bytes; the figure closed."""
    import matplotlib.pyplot as plt

    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()
