"""Speaker-independent k-fold assignment: every speaker in exactly one fold.

Speakers are shuffled by the seed, then placed largest first into the fold that holds
the fewest utterances so far (ties: lowest fold index): folds come out as even in size
as whole speakers allow, and the same input and seed always give the same folds.
"""

from __future__ import annotations

import random


def assign_folds(speaker_counts: dict[str, int], num_folds: int, seed: int = 0) -> dict[str, int]:
    """{speaker: fold} for ``num_folds`` folds (0..k-1) from utterance counts per speaker."""
    if num_folds < 2:
        raise ValueError(f"need at least 2 folds, got {num_folds}")
    if len(speaker_counts) < num_folds:
        raise ValueError(
            f"{len(speaker_counts)} speakers cannot fill {num_folds} speaker-independent folds; "
            f"use --folds {max(2, len(speaker_counts))} or fewer"
        )
    speakers = sorted(speaker_counts)
    random.Random(seed).shuffle(speakers)
    speakers.sort(key=lambda s: -speaker_counts[s])  # stable: equal counts keep the shuffled order
    totals = [0] * num_folds
    assignment: dict[str, int] = {}
    for speaker in speakers:
        fold = min(range(num_folds), key=lambda f: (totals[f], f))
        assignment[speaker] = fold
        totals[fold] += speaker_counts[speaker]
    return dict(sorted(assignment.items()))
