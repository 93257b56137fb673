"""Folds and the selection of rows: which speakers train, which select, which test.

The one owner of "which rows": ingest assigns speaker-independent folds here
(:func:`assign_folds`), and training, the Ray Data reader, :mod:`emodistill.data.rows`
and evaluation all pick their rows through :class:`Part` and :func:`select`.

Fold assignment: speakers are shuffled by the seed, then placed largest first into the
fold that holds the fewest utterances so far (ties: lowest fold index): folds come out as
even in size as whole speakers allow, and the same input and seed always give the same
folds.

Selection (the protocol a reviewer accepts): three speaker-disjoint parts

    train   the network's (and the eGeMAPS baseline's) training rows
    val     checkpoint (epoch) selection only; by default a share of the training
            folds' speakers carved out by seed, never a test speaker
    test    evaluated only, never used for selection (default: the last fold)

or the corpus' own splits (``train_splits`` / ``val_splits`` / ``test_splits``, the
paper's protocol on DEMoS).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from emodistill.config import Config

if TYPE_CHECKING:
    import pyarrow as pa

    from emodistill.data.schema import DatasetInfo


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


# ---- one part of a dataset -----------------------------------------------------------


class Part(Config):
    """Which rows of a dataset make one part of a run: folds or splits, optionally
    narrowed to some speakers or with some speakers left out."""

    folds: list[int] | None = Field(None, description="Rows in these folds (None: any fold).")
    splits: list[str] | None = Field(None, description="Rows in these corpus splits (None: any split).")
    speakers: list[str] | None = Field(None, description="Only these speakers (None: every speaker of the folds).")
    exclude_speakers: list[str] = Field(default_factory=list, description="Speakers left out (e.g. carved for validation).")

    def describe(self) -> str:
        text = f"folds {self.folds}" if self.folds is not None else ""
        if self.splits is not None:
            text = (text + " " if text else "") + f"splits {self.splits}"
        if self.speakers is not None:
            text += f", speakers {self.speakers}"
        if self.exclude_speakers:
            text += f" minus speakers {self.exclude_speakers}"
        return text or "every row"

    def check(self, info: DatasetInfo, uri: str = "dataset") -> None:
        """A clear error when the dataset has no such folds, splits or speakers."""
        if self.folds is not None:
            unknown = sorted(set(self.folds) - set(info.folds))
            if unknown:
                raise ValueError(f"{uri}: no folds {unknown}; the dataset has folds {info.folds}")
        if self.splits is not None:
            unknown = sorted(set(self.splits) - set(info.splits))
            if unknown:
                raise ValueError(f"{uri}: no splits {unknown}; the dataset has splits {info.splits or 'none'}")
        named = set(self.speakers or []) | set(self.exclude_speakers)
        unknown = sorted(named - set(info.counts_by_speaker))
        if unknown:
            raise ValueError(f"{uri}: no speakers {unknown}")

    def speaker_list(self, info: DatasetInfo) -> list[str] | None:
        """The speakers of this part (None when only the rows know: a split protocol)."""
        if self.splits is not None and self.folds is None and self.speakers is None:
            return None
        pool = self.speakers if self.speakers is not None else sorted(info.counts_by_speaker)
        if self.folds is not None:
            pool = [s for s in pool if info.speaker_folds.get(s) in set(self.folds)]
        return sorted(s for s in pool if s not in set(self.exclude_speakers))

    def num_rows(self, info: DatasetInfo) -> int:
        """Rows in this part, from dataset.json's counts (no data read)."""
        if self.splits is not None and self.folds is None and self.speakers is None and not self.exclude_speakers:
            return sum(sum(info.counts_by_split.get(s, {}).values()) for s in self.splits)
        if self.splits is None:
            return sum(sum(info.counts_by_speaker[s].values()) for s in self.speaker_list(info) or [])
        raise ValueError("the rows of splits narrowed by speakers are only known from the data")

    def filter(self, table: pa.Table) -> pa.Table:
        """The rows of ``table`` (Arrow, with fold/split/speaker columns) in this part."""
        import pyarrow as pa
        import pyarrow.compute as pc

        if self.folds is not None:
            table = table.filter(pc.is_in(table["fold"], value_set=pa.array(list(self.folds), pa.int32())))
        if self.splits is not None:
            table = table.filter(pc.is_in(table["split"], value_set=pa.array(list(self.splits), pa.string())))
        if self.speakers is not None:
            table = table.filter(pc.is_in(table["speaker"], value_set=pa.array(list(self.speakers), pa.string())))
        if self.exclude_speakers:
            keep = pc.invert(pc.is_in(table["speaker"], value_set=pa.array(list(self.exclude_speakers), pa.string())))
            table = table.filter(keep)
        return table


def part_of(folds: Sequence[int] | None = None, splits: Sequence[str] | None = None) -> Part:
    """The part of the given folds and/or splits (every row when both are None)."""
    return Part(folds=None if folds is None else list(folds), splits=None if splits is None else list(splits))


# ---- the train / val / test selection of a run ------------------------------------------


class Selection(Config):
    """The resolved parts of one run (stored in its checkpoints)."""

    protocol: Literal["folds", "splits"] = Field(description="Speaker-independent folds, or the corpus' own splits.")
    train: Part = Field(description="Training rows (the network and the eGeMAPS baseline).")
    val: Part = Field(description="Checkpoint-selection rows (never test speakers).")
    test: Part | None = Field(None, description="Rows evaluated only (None: the run holds no test part).")
    speakers: dict[str, list[str] | None] = Field(
        default_factory=dict, description="Speakers of each part (train, val, test) as resolved on the dataset."
    )

    def lines(self) -> list[str]:
        """Human-readable: which part is which, and its speakers."""
        out = []
        for name, part in (("train", self.train), ("val (selects the checkpoint)", self.val), ("test (evaluated only)", self.test)):
            if part is None:
                out.append(f"{name}: none")
                continue
            key = name.split()[0]
            who = self.speakers.get(key) if part.speakers is None else None  # else describe() names them
            out.append(f"{name}: {part.describe()}" + (f"; speakers {', '.join(who)}" if who else ""))
        return out


def select(
    info: DatasetInfo,
    *,
    train_folds: Sequence[int] | None = None,
    val_folds: Sequence[int] | None = None,
    test_folds: Sequence[int] | None = None,
    val_fraction: float = 0.2,
    train_splits: Sequence[str] | None = None,
    val_splits: Sequence[str] | None = None,
    test_splits: Sequence[str] | None = None,
    seed: int = 0,
    uri: str = "dataset",
) -> Selection:
    """Resolve a run's train / val / test parts on ``info`` (speaker-disjoint by construction).

    Folds: ``test_folds`` default to the last fold (``[]``: no test part); ``val_folds``,
    when given, select; otherwise ``val_fraction`` of the training folds' speakers
    (at least one, chosen by ``seed``) are carved out to select. Splits: give
    ``train_splits`` and ``val_splits``; ``test_splits`` is optional.
    """
    if train_splits is not None or val_splits is not None or test_splits is not None:
        if not train_splits or not val_splits:
            raise ValueError("with the corpus' own splits, give train_splits and val_splits (test_splits optional)")
        parts = {"train": part_of(splits=train_splits), "val": part_of(splits=val_splits)}
        test = part_of(splits=test_splits) if test_splits else None
        overlap = _overlap({"train": train_splits, "val": val_splits, "test": test_splits or []})
        if overlap:
            raise ValueError(f"splits {overlap} are in more than one of train, val and test")
        for part in [*parts.values(), test]:
            if part is not None:
                part.check(info, uri)
        return Selection(protocol="splits", train=parts["train"], val=parts["val"], test=test)

    folds = info.folds
    test = list(test_folds) if test_folds is not None else folds[-1:]
    val = list(val_folds) if val_folds is not None else []
    overlap = _overlap({"val": val, "test": test, "train": list(train_folds or [])})
    if overlap:
        raise ValueError(
            f"folds {overlap} are in more than one of train, val and test: val folds select the checkpoint, "
            f"test folds are only evaluated (default test fold: the last, {folds[-1:]})"
        )
    train = list(train_folds) if train_folds is not None else [f for f in folds if f not in set(val) | set(test)]
    unknown = sorted(set(train + val + test) - set(folds))
    if unknown:
        raise ValueError(f"{uri}: no folds {unknown}; the dataset has folds {folds}")
    if not train:
        raise ValueError(f"no training folds left: the dataset has folds {folds}, val {val}, test {test}")
    train_part = Part(folds=train)
    if val:
        val_part = Part(folds=val)
    else:
        pool = train_part.speaker_list(info) or []
        if len(pool) < 2:
            raise ValueError(
                f"the training folds {train} hold {len(pool)} speaker(s): too few to carve validation speakers "
                "from; give data.val_folds"
            )
        if not 0 < val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
        chosen = sorted(random.Random(seed).sample(pool, min(len(pool) - 1, max(1, round(val_fraction * len(pool))))))
        val_part = Part(folds=train, speakers=chosen)
        train_part = Part(folds=train, exclude_speakers=chosen)
    test_part = Part(folds=test) if test else None
    speakers = {
        "train": train_part.speaker_list(info),
        "val": val_part.speaker_list(info),
        "test": test_part.speaker_list(info) if test_part else [],
    }
    for name, who in speakers.items():
        if name != "test" and not who:
            raise ValueError(f"the {name} part of folds train={train} val={val} test={test} holds no speakers")
    return Selection(protocol="folds", train=train_part, val=val_part, test=test_part, speakers=speakers)


def _overlap(parts: dict[str, Sequence]) -> list:
    seen: dict = {}
    both = set()
    for name, values in parts.items():
        for v in values:
            if v in seen and seen[v] != name:
                both.add(v)
            seen.setdefault(v, name)
    return sorted(both)


def legacy_selection(metadata: dict) -> Selection | None:
    """A selection from a checkpoint written before selections were recorded
    (``train_folds``/``val_folds``/``*_splits`` keys: the held-out part both selected and was reported)."""
    if metadata.get("val_splits") or metadata.get("train_splits"):
        held = part_of(splits=metadata.get("val_splits") or [])
        return Selection(protocol="splits", train=part_of(splits=metadata.get("train_splits") or []), val=held, test=held)
    if metadata.get("val_folds") is not None or metadata.get("train_folds") is not None:
        held = part_of(folds=metadata.get("val_folds") or [])
        return Selection(protocol="folds", train=part_of(folds=metadata.get("train_folds") or []), val=held, test=held)
    return None


__all__ = ["Part", "Selection", "assign_folds", "legacy_selection", "part_of", "select"]
