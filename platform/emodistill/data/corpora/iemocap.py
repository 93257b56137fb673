"""`iemocap`: the Interactive Emotional Dyadic Motion Capture database (IEMOCAP_full_release).

Layout::

    <root>/Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_F000.wav
    <root>/Session1/sentences/wav/Ses01M_script01_2/Ses01M_script01_2_M012.wav
    <root>/Session1/dialog/EmoEvaluation/Ses01F_impro01.txt
    ...
    <root>/Session5/...

Only the utterance audio under ``SessionN/sentences/wav/<dialog>/`` is read; other audio
(``dialog/wav/`` holds whole dialogs) is ignored. A dialog id is ``Ses<NN><F|M>_<name>``
(the letter: who wears the motion-capture markers); an utterance id is the dialog id, an
underscore, and the speaking person's gender letter plus three digits (``F000``).

Labels come from the top-level files of ``SessionN/dialog/EmoEvaluation/``, one line per
utterance::

    [6.2901 - 8.2357]<TAB>Ses01F_impro01_F000<TAB>neu<TAB>[2.5000, 2.5000, 2.5000]

(the other lines, starting with ``C-``, ``A-``, ``%`` or blank, are individual
annotations and are not read). Codes: neu neutral, hap happy, exc excited, ang angry,
sad sad, fru frustrated, fea fearful, sur surprised, dis disgust, oth other; ``xxx``
means the annotators did not agree (no label).

The speaker is the session plus the speaking person's gender (``Ses01F``): each session
has one female and one male actor. ``fold`` is the session number minus one: sessions
are the standard speaker-independent folds.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterator

from emodistill.data.corpora.base import Corpus, SourceItem, find_audio, relative, strip_root, unknown_label

NAME = "iemocap"

SESSION_DIR = re.compile(r"^Session(\d+)$")
# Ses01F_impro01_F000, Ses01M_script01_2_M012: (dialog, session number, speaking gender)
UTTERANCE = re.compile(r"^(Ses(\d{2})[FM]_\w+?)_([FM])\d{3}$")
LABEL_LINE = re.compile(r"^\[\s*[\d.]+\s*-\s*[\d.]+\s*\]\s+(\S+)\s+(\S+)")

EMOTIONS = {
    "neu": "neutral",
    "hap": "happy",
    "exc": "excited",
    "ang": "angry",
    "sad": "sad",
    "fru": "frustrated",
    "fea": "fearful",
    "sur": "surprised",
    "dis": "disgust",
    "oth": "other",
}
NO_AGREEMENT = "xxx"
# How many Session folders `detect` looks into before giving up.
DETECT_FOLDERS = 5


def _sessions(fs, root: str) -> list[tuple[int, str]]:
    """(session number, folder) of every ``Session<N>`` folder of ``root``, in order."""
    try:
        entries = fs.ls(root, detail=True)
    except (FileNotFoundError, NotADirectoryError):
        return []
    found = []
    for entry in entries:
        match = SESSION_DIR.match(posixpath.basename(entry["name"].rstrip("/")))
        if match and entry.get("type") == "directory":
            found.append((int(match.group(1)), entry["name"].rstrip("/")))
    return sorted(found)


def _utterance_dir(session: str) -> str:
    return posixpath.join(session, "sentences", "wav")


def parse_labels(text: str) -> dict[str, str]:
    """{utterance id: code} from the text of one EmoEvaluation file."""
    labels = {}
    for line in text.splitlines():
        match = LABEL_LINE.match(line)
        if match:
            labels[match.group(1)] = match.group(2)
    return labels


def _read_labels(fs, session: str) -> dict[str, str]:
    """The codes of every utterance of one session, from ``dialog/EmoEvaluation/*.txt``."""
    labels: dict[str, str] = {}
    folder = posixpath.join(session, "dialog", "EmoEvaluation")
    try:
        entries = fs.ls(folder, detail=True)
    except (FileNotFoundError, NotADirectoryError):
        return labels
    for entry in sorted(entries, key=lambda e: e["name"]):
        if entry.get("type") == "file" and entry["name"].endswith(".txt"):
            with fs.open(entry["name"], "rb") as fh:
                labels.update(parse_labels(fh.read().decode("utf-8", errors="replace")))
    return labels


def _name_problem(relpath: str, session_number: int) -> tuple[str | None, str | None]:
    """(problem, speaker) of an audio file under ``SessionN/sentences/wav/``."""
    parts = relpath.split("/")
    filename = parts[-1]
    if len(parts) != 5:
        return f"bad_name: {relpath!r} is not in a dialog folder SessionN/sentences/wav/<dialog>/", None
    utterance = posixpath.splitext(filename)[0]
    match = UTTERANCE.match(utterance)
    if match is None:
        return f"bad_name: {filename!r} is not an IEMOCAP utterance id like Ses01F_impro01_F000", None
    dialog, session, gender = match.groups()
    if dialog != parts[3]:
        return f"bad_name: utterance {utterance} lies in the folder of dialog {parts[3]}", None
    if int(session) != session_number:
        return f"bad_name: utterance {utterance} lies in Session{session_number}", None
    return None, f"Ses{session}{gender}"


def _item(path: str, relpath: str, session_number: int, labels: dict[str, str]) -> SourceItem:
    base = {"path": path, "relpath": relpath, "corpus": NAME, "fold": session_number - 1}
    problem, speaker = _name_problem(relpath, session_number)
    if problem is not None:
        return SourceItem(**base, speaker="", label=None, raw_label="", problem=problem)
    base["speaker"] = speaker
    utterance = posixpath.splitext(posixpath.basename(relpath))[0]
    code = labels.get(utterance)
    if code is None:
        return SourceItem(**base, label=None, raw_label="", problem="unknown_label: no label in EmoEvaluation")
    if code == NO_AGREEMENT:
        problem = f"unknown_label: {code!r} (annotators did not agree)"
        return SourceItem(**base, label=None, raw_label=code, problem=problem)
    if code not in EMOTIONS:
        return unknown_label(base, code, EMOTIONS)
    return SourceItem(**base, label=EMOTIONS[code], raw_label=code)


class IemocapCorpus(Corpus):
    """IEMOCAP: ``SessionN/sentences/wav/<dialog>/<utterance>.wav`` + EmoEvaluation labels."""

    name = NAME

    def detect(self, fs, root: str) -> bool:
        sessions = _sessions(fs, strip_root(fs, root))
        return any(fs.isdir(_utterance_dir(folder)) for _, folder in sessions[:DETECT_FOLDERS])

    def discover(self, fs, root: str) -> Iterator[SourceItem]:
        root = strip_root(fs, root)
        items = []
        for number, session in _sessions(fs, root):
            audio_dir = _utterance_dir(session)
            if not fs.isdir(audio_dir):
                continue
            labels = _read_labels(fs, session)
            for path in find_audio(fs, audio_dir):
                items.append(_item(path, relative(path, root), number, labels))
        yield from sorted(items, key=lambda it: it.relpath)
