"""`emodb`: the Berlin Database of Emotional Speech (Emo-DB).

Layout::

    <root>/wav/03a01Fa.wav
    ...

(the release's other folders, ``lablaut/``, ``silb/``, ... hold no audio and are ignored,
as is audio outside ``wav/``). A file name is, without separators:

- speaker: two digits, one of 03 08 09 10 11 12 13 14 15 16
- text: a letter and two digits, one of a01 a02 a04 a05 a07 b01 b02 b03 b09 b10
- emotion: one letter (German initial): W Ärger (anger), L Langeweile (boredom),
  E Ekel (disgust), A Angst (fear), F Freude (happiness), T Trauer (sadness), N neutral
- version: a lower-case letter (a, b, c, ...) when a sentence was recorded more than once
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterator

from emodistill.data.corpora.base import Corpus, SourceItem, audio_files_in, relative, stem, strip_root, unknown_label

NAME = "emodb"
AUDIO_DIR = "wav"

FILE_NAME = re.compile(r"^(\d{2})([a-z]\d{2})([A-Za-z])([a-z])$")

SPEAKERS = {"03", "08", "09", "10", "11", "12", "13", "14", "15", "16"}
TEXTS = {"a01", "a02", "a04", "a05", "a07", "b01", "b02", "b03", "b09", "b10"}
EMOTIONS = {
    "W": "angry",
    "L": "boredom",
    "E": "disgust",
    "A": "fearful",
    "F": "happy",
    "T": "sad",
    "N": "neutral",
}
SCHEME = "speaker (2 digits), text (letter + 2 digits), emotion letter, version letter, e.g. 03a01Fa"


def _item(path: str, relpath: str) -> SourceItem:
    base = {"path": path, "relpath": relpath, "corpus": NAME}
    match = FILE_NAME.match(stem(path))
    if match is None:
        problem = f"bad_name: {posixpath.basename(path)!r} does not follow the EmoDB scheme {SCHEME}"
        return SourceItem(**base, speaker="", label=None, raw_label="", problem=problem)
    speaker, text, emotion, _version = match.groups()
    base["speaker"] = speaker
    if speaker not in SPEAKERS:
        problem = f"bad_name: speaker {speaker} is not one of {sorted(SPEAKERS)}"
        return SourceItem(**base, label=None, raw_label=emotion, problem=problem)
    if text not in TEXTS:
        problem = f"bad_name: text code {text!r} is not one of {sorted(TEXTS)}"
        return SourceItem(**base, label=None, raw_label=emotion, problem=problem)
    if emotion not in EMOTIONS:
        return unknown_label(base, emotion, EMOTIONS)
    return SourceItem(**base, label=EMOTIONS[emotion], raw_label=emotion)


class EmoDBCorpus(Corpus):
    """EmoDB: ``wav/<speaker><text><emotion><version>.wav``."""

    name = NAME

    def detect(self, fs, root: str) -> bool:
        folder = posixpath.join(strip_root(fs, root), AUDIO_DIR)
        return any(FILE_NAME.match(stem(p)) for p in audio_files_in(fs, folder))

    def discover(self, fs, root: str) -> Iterator[SourceItem]:
        root = strip_root(fs, root)
        paths = audio_files_in(fs, posixpath.join(root, AUDIO_DIR))
        items = [_item(p, relative(p, root)) for p in paths]
        yield from sorted(items, key=lambda it: it.relpath)
