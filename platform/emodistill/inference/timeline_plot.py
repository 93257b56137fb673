"""A timeline as a picture: each label's probability over time, speech regions shaded,
and a strip of the winning label per segment (matplotlib, headless)."""

from __future__ import annotations

import os


def plot_timeline(timeline, path: str | os.PathLike, title: str | None = None) -> str:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import numpy as np

    labels = timeline.labels
    colors = {label: plt.get_cmap("tab10")(i % 10) for i, label in enumerate(labels)}
    duration = max(timeline.duration, max((s.end for s in timeline.segments), default=0.0), 1e-3)
    width = float(np.clip(duration / 6.0, 8.0, 24.0))
    fig, (strip, ax) = plt.subplots(2, 1, figsize=(width, 4.2), sharex=True, gridspec_kw={"height_ratios": [1, 6]})
    for start, end in timeline.speech:
        ax.axvspan(start, end, color="0.88", lw=0, zorder=0)
    if timeline.segments:
        mids = np.array([(s.start + s.end) / 2 for s in timeline.segments])
        # a gap (no speech) between consecutive segments breaks the lines
        gap = np.r_[False, np.array([b.start > a.end for a, b in zip(timeline.segments, timeline.segments[1:])])]
        for label in labels:
            ys = np.array([s.scores[label] for s in timeline.segments], dtype=float)
            xs = mids.copy()
            if gap.any():
                idx = np.flatnonzero(gap)
                xs = np.insert(xs, idx, np.nan)
                ys = np.insert(ys, idx, np.nan)
            ax.plot(xs, ys, "-o", ms=2.5, lw=1.4, color=colors[label], label=label)
            # each segment's score across the time it covers (isolated segments stay visible)
            ax.hlines([s.scores[label] for s in timeline.segments], [s.start for s in timeline.segments],
                      [s.end for s in timeline.segments], colors=[colors[label]], lw=3, alpha=0.35)
        for s in timeline.segments:
            strip.axvspan(s.start, s.end, color=colors[s.label], lw=0, alpha=0.85)
    else:
        ax.text(duration / 2, 0.5, "no speech found", ha="center", va="center", color="0.4")
    ax.set_xlim(0, duration)
    ax.set_ylim(0, 1)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("probability")
    ax.grid(alpha=0.3)
    handles = [plt.Rectangle((0, 0), 1, 1, color="0.88")]
    lines, names = ax.get_legend_handles_labels()
    ax.legend(lines + handles, names + ["speech"], loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False, fontsize=8)
    strip.set_yticks([])
    strip.set_ylabel("label", rotation=0, ha="right", va="center", fontsize=8)
    name = os.path.basename(str(timeline.source))
    strip.set_title(title or f"{name}: {len(timeline.segments)} segments, {timeline.exit}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)
