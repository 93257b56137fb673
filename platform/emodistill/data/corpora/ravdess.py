"""`ravdess`: the Ryerson Audio-Visual Database of Emotional Speech and Song.

Layout (the audio-only zips, extracted)::

    <root>/Actor_01/03-01-05-01-02-01-01.wav
    ...
    <root>/Actor_24/...

A file name is seven two-digit fields, ``MM-VV-EE-II-SS-RR-AA``:

- modality: 01 full audio-video, 02 video-only, 03 audio-only
- vocal channel: 01 speech, 02 song
- emotion: 01 neutral, 02 calm, 03 happy, 04 sad, 05 angry, 06 fearful, 07 disgust,
  08 surprised
- intensity: 01 normal, 02 strong (there is no strong intensity for neutral)
- statement: 01 "Kids are talking by the door", 02 "Dogs are sitting by the door"
- repetition: 01 or 02
- actor: 01..24 (odd = male, even = female)

The speaker is the actor number (``"01"``..``"24"``); it must match the ``Actor_NN``
folder the file lies in. Song files (vocal channel 02, from the song zip) are included
too: they are labelled emotional audio like the speech files. Audio outside the
``Actor_NN`` folders is not part of the corpus and is ignored.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterator

from emodistill.data.corpora.base import AUDIO_EXTENSIONS, Corpus, SourceItem, find_audio, list_dir, relative, strip_root, unknown_label

NAME = "ravdess"

ACTOR_DIR = re.compile(r"^Actor_(\d{2})$")
FILE_NAME = re.compile(r"^(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})$")

EMOTIONS = {
    "01": "neutral",
    "02": "calm",
    "03": "happy",
    "04": "sad",
    "05": "angry",
    "06": "fearful",
    "07": "disgust",
    "08": "surprised",
}
# Allowed values of the fields other than the emotion (field name, allowed codes).
FIELDS = (
    ("modality", {"01", "02", "03"}),
    ("vocal channel", {"01", "02"}),
    None,  # emotion: an unknown code is an unknown label, not a bad name
    ("intensity", {"01", "02"}),
    ("statement", {"01", "02"}),
    ("repetition", {"01", "02"}),
    ("actor", {f"{n:02d}" for n in range(1, 25)}),
)
SCHEME = "MM-VV-EE-II-SS-RR-AA (seven two-digit fields)"
# How many Actor_NN folders `detect` looks into before giving up.
DETECT_FOLDERS = 3


def _basename(path: str) -> str:
    return posixpath.basename(path.rstrip("/"))


def _name_problem(fields: tuple[str, ...], actor_dir: str) -> str | None:
    """Why a name that has the seven-field shape is still not a RAVDESS name, or None."""
    for value, spec in zip(fields, FIELDS):
        if spec is not None and value not in spec[1]:
            return f"bad_name: {spec[0]} {value!r} is not one of {sorted(spec[1])}"
    if fields[6] != actor_dir:
        return f"bad_name: actor {fields[6]} in the file name but the file lies in Actor_{actor_dir}"
    return None


def _item(path: str, relpath: str, actor_dir: str) -> SourceItem:
    stem = posixpath.splitext(posixpath.basename(relpath))[0]
    base = {"path": path, "relpath": relpath, "corpus": NAME}
    match = FILE_NAME.match(stem)
    if match is None:
        problem = f"bad_name: {posixpath.basename(relpath)!r} does not follow the RAVDESS scheme {SCHEME}"
        return SourceItem(**base, speaker=actor_dir, label=None, raw_label="", problem=problem)
    fields = match.groups()
    emotion = fields[2]
    problem = _name_problem(fields, actor_dir)
    if problem is not None:
        return SourceItem(**base, speaker=actor_dir, label=None, raw_label=emotion, problem=problem)
    base["speaker"] = fields[6]
    if emotion not in EMOTIONS:
        return unknown_label(base, emotion, EMOTIONS)
    return SourceItem(**base, label=EMOTIONS[emotion], raw_label=emotion)


class RavdessCorpus(Corpus):
    """RAVDESS: ``Actor_NN/MM-VV-EE-II-SS-RR-AA.wav``, speech and song."""

    name = NAME

    def detect(self, fs, root: str) -> bool:
        root = strip_root(fs, root)
        actor_dirs = [
            e["name"]
            for e in list_dir(fs, root)
            if e.get("type") == "directory" and ACTOR_DIR.match(_basename(e["name"]))
        ]
        for folder in sorted(actor_dirs)[:DETECT_FOLDERS]:
            for entry in list_dir(fs, folder):
                stem, ext = posixpath.splitext(_basename(entry["name"]))
                if entry.get("type") == "file" and ext.lower() in AUDIO_EXTENSIONS and FILE_NAME.match(stem):
                    return True
        return False

    def discover(self, fs, root: str) -> Iterator[SourceItem]:
        root = strip_root(fs, root)
        items = []
        for path in find_audio(fs, root):
            relpath = relative(path, root)
            parts = relpath.split("/")
            folder = ACTOR_DIR.match(parts[0]) if len(parts) == 2 else None
            if folder is not None:
                items.append(_item(path, relpath, folder.group(1)))
        yield from sorted(items, key=lambda it: it.relpath)
