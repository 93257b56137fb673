"""What a corpus adapter is: it walks a corpus in its published layout and yields one
:class:`SourceItem` per audio file, with the label and speaker read from the corpus' own
conventions (file names, label files). Adapters never decode audio; ingest does.

Adapters work on an fsspec filesystem, so a corpus on ``s3://`` is read the same way as
a local one. Labels are mapped to one canonical vocabulary (:data:`CANONICAL_LABELS`);
``ingest --labels`` maps those further (merge or drop classes).
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator
from dataclasses import dataclass

import fsspec

# One vocabulary for every corpus, so `--labels` mappings read the same everywhere.
CANONICAL_LABELS = (
    "neutral",
    "calm",
    "happy",
    "sad",
    "angry",
    "fearful",
    "disgust",
    "surprised",
    "boredom",
    "excited",
    "frustrated",
    "other",
)

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".opus")


@dataclass(frozen=True)
class SourceItem:
    """One audio file of a corpus, before decoding."""

    path: str  # path of the audio file on the corpus filesystem
    relpath: str  # path relative to the corpus root, '/'-separated (stable ids come from it)
    label: str | None  # canonical label; None when the corpus gives none we understand
    raw_label: str  # the label as the corpus writes it (for reject messages)
    speaker: str  # speaker id, unique within the corpus
    corpus: str  # adapter name: csv, ravdess, crema-d, emodb, iemocap, esd, ...
    split: str | None = None  # the corpus' own split (train/dev/test), when it defines one
    fold: int | None = None  # the corpus' own speaker-independent fold (IEMOCAP sessions)
    problem: str | None = None  # "reason: message" when unusable before decoding


class Corpus:
    """Base of the adapters. Subclasses set ``name`` and implement both methods."""

    name: str = ""

    def detect(self, fs: fsspec.AbstractFileSystem, root: str) -> bool:
        """True when ``root`` looks like this corpus (cheap: a few listings, no decoding)."""
        raise NotImplementedError

    def discover(self, fs: fsspec.AbstractFileSystem, root: str) -> Iterator[SourceItem]:
        """Every audio file of the corpus under ``root``, sorted by path."""
        raise NotImplementedError


def strip_root(fs: fsspec.AbstractFileSystem, root: str) -> str:
    """``root`` as the filesystem names its paths (no protocol, no trailing slash)."""
    return fs._strip_protocol(root).rstrip("/") or "/"


def list_dir(fs: fsspec.AbstractFileSystem, path: str) -> list[dict]:
    """Entries (with details) directly in ``path``; none when it does not exist."""
    try:
        return fs.ls(path, detail=True)
    except (FileNotFoundError, NotADirectoryError):
        return []


def audio_files_in(fs: fsspec.AbstractFileSystem, folder: str) -> list[str]:
    """The audio files directly in ``folder`` (none when it does not exist)."""
    return [
        e["name"]
        for e in list_dir(fs, folder)
        if e.get("type") == "file" and e["name"].lower().endswith(AUDIO_EXTENSIONS)
    ]


def subdirs(fs: fsspec.AbstractFileSystem, folder: str) -> list[str]:
    """Names of the folders directly in ``folder``, sorted."""
    return sorted(posixpath.basename(e["name"].rstrip("/")) for e in list_dir(fs, folder) if e.get("type") == "directory")


def stem(path: str) -> str:
    """File name without folder and extension."""
    return posixpath.splitext(posixpath.basename(path))[0]


def find_audio(fs: fsspec.AbstractFileSystem, root: str) -> list[str]:
    """All audio files under ``root`` (recursive), sorted."""
    root = root.rstrip("/")
    found = [p for p in fs.find(root) if p.lower().endswith(AUDIO_EXTENSIONS)]
    return sorted(found)


def relative(path: str, root: str) -> str:
    return posixpath.relpath(path, root.rstrip("/"))


def unknown_label(item_kwargs: dict, raw: str, known) -> SourceItem:
    """A SourceItem that ingest will reject as ``unknown_label``."""
    return SourceItem(
        **item_kwargs,
        label=None,
        raw_label=raw,
        problem=f"unknown_label: {raw!r} is not one of {sorted(known)}",
    )
