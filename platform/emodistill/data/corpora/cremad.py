"""`crema-d`: the Crowd-sourced Emotional Multimodal Actors Dataset.

Layout::

    <root>/AudioWAV/1001_DFA_ANG_XX.wav
    ...

or the same files directly under ``<root>`` (both are read when both exist). Other
folders of the release (``AudioMP3/``, ``VideoFlash/``, ...) are ignored: they hold the
same clips in other encodings.

A file name is ``ActorID_Sentence_Emotion_Intensity``:

- actor: 1001..1091 (the speaker id)
- sentence: IEO, TIE, IOM, IWW, TAI, MTI, IWL, ITH, DFA, ITS, TSI, WSI
- emotion: ANG angry, DIS disgust, FEA fearful, HAP happy, NEU neutral, SAD sad
- intensity: LO low, MD medium, HI high, XX unspecified
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterator

from emodistill.data.corpora.base import Corpus, SourceItem, audio_files_in, relative, stem, strip_root, unknown_label

NAME = "crema-d"
AUDIO_DIR = "AudioWAV"

FILE_NAME = re.compile(r"^(\d{4})_([A-Z]{3})_([A-Z]{3})_([A-Z]{2})$")

ACTORS = {str(n) for n in range(1001, 1092)}
SENTENCES = {"IEO", "TIE", "IOM", "IWW", "TAI", "MTI", "IWL", "ITH", "DFA", "ITS", "TSI", "WSI"}
INTENSITIES = {"LO", "MD", "HI", "XX"}
EMOTIONS = {
    "ANG": "angry",
    "DIS": "disgust",
    "FEA": "fearful",
    "HAP": "happy",
    "NEU": "neutral",
    "SAD": "sad",
}
SCHEME = "ActorID_Sentence_Emotion_Intensity, e.g. 1001_DFA_ANG_XX"


def _folders(root: str) -> list[str]:
    return [posixpath.join(root, AUDIO_DIR), root]


def _name_problem(actor: str, sentence: str, intensity: str) -> str | None:
    if actor not in ACTORS:
        return f"bad_name: actor {actor} is not in 1001..1091"
    if sentence not in SENTENCES:
        return f"bad_name: sentence code {sentence!r} is not one of {sorted(SENTENCES)}"
    if intensity not in INTENSITIES:
        return f"bad_name: intensity {intensity!r} is not one of {sorted(INTENSITIES)}"
    return None


def _item(path: str, relpath: str) -> SourceItem:
    base = {"path": path, "relpath": relpath, "corpus": NAME}
    match = FILE_NAME.match(stem(path))
    if match is None:
        problem = f"bad_name: {posixpath.basename(path)!r} does not follow the CREMA-D scheme {SCHEME}"
        return SourceItem(**base, speaker="", label=None, raw_label="", problem=problem)
    actor, sentence, emotion, intensity = match.groups()
    base["speaker"] = actor
    problem = _name_problem(actor, sentence, intensity)
    if problem is not None:
        return SourceItem(**base, label=None, raw_label=emotion, problem=problem)
    if emotion not in EMOTIONS:
        return unknown_label(base, emotion, EMOTIONS)
    return SourceItem(**base, label=EMOTIONS[emotion], raw_label=emotion)


class CremaDCorpus(Corpus):
    """CREMA-D: ``AudioWAV/ActorID_Sentence_Emotion_Intensity.wav`` (or the files at the root)."""

    name = NAME

    def detect(self, fs, root: str) -> bool:
        root = strip_root(fs, root)
        return any(FILE_NAME.match(stem(p)) for folder in _folders(root) for p in audio_files_in(fs, folder))

    def discover(self, fs, root: str) -> Iterator[SourceItem]:
        root = strip_root(fs, root)
        paths = [p for folder in _folders(root) for p in audio_files_in(fs, folder)]
        items = [_item(p, relative(p, root)) for p in paths]
        yield from sorted(items, key=lambda it: it.relpath)
