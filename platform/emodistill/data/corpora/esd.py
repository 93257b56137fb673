"""`esd`: the Emotional Speech Dataset (Zhou et al.), 10 Mandarin and 10 English speakers.

Layout::

    <root>/0011/Angry/0011_000351.wav
    <root>/0011/0011.txt                      (transcripts: ignored)
    ...

or, in the releases that ship the split, one more folder level::

    <root>/0011/Angry/train/0011_000351.wav   (also evaluation/ and test/)

Speakers are the four-digit folders (0001..0010 Mandarin, 0011..0020 English); every file
name starts with its speaker's id (``<speaker>_<6 digits>``). The emotion is the folder:
Angry, Happy, Neutral, Sad, Surprise -> angry, happy, neutral, sad, surprised. With split
folders, ``split`` is train / dev (``evaluation``) / test; without them it is None.
Folder names are matched case-insensitively. Audio outside the speaker folders is ignored.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterator

from emodistill.data.corpora.base import Corpus, SourceItem, find_audio, relative, strip_root, subdirs, unknown_label

NAME = "esd"

SPEAKER_DIR = re.compile(r"^\d{4}$")
FILE_NAME = re.compile(r"^(\d{4})_(\d{6})$")

EMOTIONS = {
    "angry": "angry",
    "happy": "happy",
    "neutral": "neutral",
    "sad": "sad",
    "surprise": "surprised",
}
SPLITS = {"train": "train", "evaluation": "dev", "test": "test"}
# How many speaker folders `detect` looks into before giving up.
DETECT_FOLDERS = 3


def _split(parts: list[str]) -> tuple[str | None, str | None]:
    """(split, problem) from the path below the emotion folder (its file name last)."""
    if len(parts) == 1:
        return None, None
    if len(parts) == 2 and parts[0].lower() in SPLITS:
        return SPLITS[parts[0].lower()], None
    folder = "/".join(parts[:-1])
    return None, f"bad_name: folder {folder!r} is not one of the split folders {sorted(SPLITS)}"


def _item(path: str, relpath: str) -> SourceItem:
    speaker, *below = relpath.split("/")
    base = {"path": path, "relpath": relpath, "corpus": NAME, "speaker": speaker}
    filename = below[-1]
    if len(below) < 2:
        problem = f"bad_name: {filename!r} lies directly in the speaker folder, not in an emotion folder"
        return SourceItem(**base, label=None, raw_label="", problem=problem)
    emotion = below[0]
    base["split"], problem = _split(below[1:])
    if problem is None:
        match = FILE_NAME.match(posixpath.splitext(filename)[0])
        if match is None:
            problem = f"bad_name: {filename!r} does not follow the ESD scheme <speaker>_<6 digits>, e.g. 0011_000351"
        elif match.group(1) != speaker:
            problem = f"bad_name: {filename!r} is named for speaker {match.group(1)} but lies in folder {speaker}"
    if problem is not None:
        return SourceItem(**base, label=None, raw_label=emotion, problem=problem)
    if emotion.lower() not in EMOTIONS:
        return unknown_label(base, emotion, ["Angry", "Happy", "Neutral", "Sad", "Surprise"])
    return SourceItem(**base, label=EMOTIONS[emotion.lower()], raw_label=emotion)


class ESDCorpus(Corpus):
    """ESD: ``<speaker>/<Emotion>/[train|evaluation|test/]<speaker>_<n>.wav``."""

    name = NAME

    def detect(self, fs, root: str) -> bool:
        root = strip_root(fs, root)
        speakers = [name for name in subdirs(fs, root) if SPEAKER_DIR.match(name)]
        for speaker in speakers[:DETECT_FOLDERS]:
            if any(name.lower() in EMOTIONS for name in subdirs(fs, posixpath.join(root, speaker))):
                return True
        return False

    def discover(self, fs, root: str) -> Iterator[SourceItem]:
        root = strip_root(fs, root)
        items = []
        for path in find_audio(fs, root):
            relpath = relative(path, root)
            if "/" in relpath and SPEAKER_DIR.match(relpath.split("/", 1)[0]):
                items.append(_item(path, relpath))
        yield from sorted(items, key=lambda it: it.relpath)
