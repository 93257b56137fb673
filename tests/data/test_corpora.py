"""Corpus adapters on small fake trees in each corpus' published layout.

Every tree holds well-named files, a badly named one, an unknown emotion code and
unrelated files (text, README, audio outside the corpus' folders) that must be ignored.
The trees are written to a local folder and to fsspec's in-memory filesystem, which
stands in for s3://.
"""

from __future__ import annotations

import io
import uuid

import fsspec
import numpy as np
import pytest
import soundfile as sf

from emodistill.data.corpora import CANONICAL_LABELS, CORPORA, get_corpus
from emodistill.data.corpora.iemocap import parse_labels

ADAPTERS = ("ravdess", "crema-d", "emodb", "iemocap", "esd")
_WAVS: dict[int, bytes] = {}


def wav(rate: int = 16000) -> bytes:
    """0.3 s of a 440 Hz sine as 16-bit WAV bytes (made once per rate)."""
    if rate not in _WAVS:
        t = np.arange(int(0.3 * rate)) / rate
        buf = io.BytesIO()
        sf.write(buf, 0.3 * np.sin(2 * np.pi * 440 * t), rate, format="WAV", subtype="PCM_16")
        _WAVS[rate] = buf.getvalue()
    return _WAVS[rate]


# ---------------------------------------------------------------------------- trees
# Each tree: {relpath: bytes}; each EXPECTED: {relpath: (label, raw_label, speaker, problem reason)}.

RAVDESS = {
    "Actor_01/03-01-05-01-02-01-01.wav": wav(22050),
    "Actor_01/03-02-03-02-01-02-01.wav": wav(22050),  # song
    "Actor_01/notes.txt": b"not audio",
    "Actor_02/03-01-01-01-01-01-02.wav": wav(22050),
    "Actor_02/03-01-09-01-01-01-02.wav": wav(22050),  # emotion 09 does not exist
    "Actor_02/03-01-04-01-01-01-05.wav": wav(22050),  # actor 05 in Actor_02
    "Actor_02/03-01-04-03-01-01-02.wav": wav(22050),  # intensity 03 does not exist
    "Actor_02/take2.wav": wav(22050),
    "Actor_02/01-01-04-01-01-01-02.mp4": b"video, not audio",
    "README.txt": b"RAVDESS",
    "stray.wav": wav(22050),  # outside the Actor folders
}
RAVDESS_EXPECTED = {
    "Actor_01/03-01-05-01-02-01-01.wav": ("angry", "05", "01", None),
    "Actor_01/03-02-03-02-01-02-01.wav": ("happy", "03", "01", None),
    "Actor_02/03-01-01-01-01-01-02.wav": ("neutral", "01", "02", None),
    "Actor_02/03-01-04-01-01-01-05.wav": (None, "04", "02", "bad_name"),
    "Actor_02/03-01-04-03-01-01-02.wav": (None, "04", "02", "bad_name"),
    "Actor_02/03-01-09-01-01-01-02.wav": (None, "09", "02", "unknown_label"),
    "Actor_02/take2.wav": (None, "", "02", "bad_name"),
}

CREMAD = {
    "AudioWAV/1001_DFA_ANG_XX.wav": wav(),
    "AudioWAV/1001_IEO_HAP_HI.wav": wav(),
    "AudioWAV/1091_TIE_NEU_LO.wav": wav(),
    "AudioWAV/1002_WSI_SAD_MD.wav": wav(),
    "AudioWAV/1002_ITS_FEA_XX.wav": wav(),
    "AudioWAV/1003_MTI_DIS_HI.wav": wav(),
    "AudioWAV/1002_DFA_XYZ_MD.wav": wav(),  # no emotion XYZ
    "AudioWAV/1001_DFA_ANG.wav": wav(),  # intensity missing
    "AudioWAV/1092_DFA_ANG_XX.wav": wav(),  # actor out of range
    "AudioWAV/1004_ABC_ANG_XX.wav": wav(),  # no sentence ABC
    "AudioWAV/readme.txt": b"CREMA-D",
    "AudioMP3/1001_DFA_ANG_XX.mp3": b"same clip as mp3: ignored",
    "README.md": b"CREMA-D",
}
CREMAD_EXPECTED = {
    "AudioWAV/1001_DFA_ANG_XX.wav": ("angry", "ANG", "1001", None),
    "AudioWAV/1001_IEO_HAP_HI.wav": ("happy", "HAP", "1001", None),
    "AudioWAV/1091_TIE_NEU_LO.wav": ("neutral", "NEU", "1091", None),
    "AudioWAV/1002_WSI_SAD_MD.wav": ("sad", "SAD", "1002", None),
    "AudioWAV/1002_ITS_FEA_XX.wav": ("fearful", "FEA", "1002", None),
    "AudioWAV/1003_MTI_DIS_HI.wav": ("disgust", "DIS", "1003", None),
    "AudioWAV/1002_DFA_XYZ_MD.wav": (None, "XYZ", "1002", "unknown_label"),
    "AudioWAV/1001_DFA_ANG.wav": (None, "", "", "bad_name"),
    "AudioWAV/1092_DFA_ANG_XX.wav": (None, "ANG", "1092", "bad_name"),
    "AudioWAV/1004_ABC_ANG_XX.wav": (None, "ANG", "1004", "bad_name"),
}

EMODB = {
    "wav/03a01Fa.wav": wav(),
    "wav/16b10Wb.wav": wav(),
    "wav/08a02Lc.wav": wav(),
    "wav/09b03Ea.wav": wav(),
    "wav/10a04Aa.wav": wav(),
    "wav/11a05Ta.wav": wav(),
    "wav/12a07Na.wav": wav(),
    "wav/13b01Xa.wav": wav(),  # no emotion X
    "wav/99a01Fa.wav": wav(),  # no speaker 99
    "wav/14c01Fa.wav": wav(),  # no text c01
    "wav/recording.wav": wav(),
    "wav/readme.txt": b"EmoDB",
    "lablaut/03a01Fa.lab": b"labels",
    "erkennung.txt": b"EmoDB",
    "extra/15a01Fa.wav": wav(),  # outside wav/
}
EMODB_EXPECTED = {
    "wav/03a01Fa.wav": ("happy", "F", "03", None),
    "wav/16b10Wb.wav": ("angry", "W", "16", None),
    "wav/08a02Lc.wav": ("boredom", "L", "08", None),
    "wav/09b03Ea.wav": ("disgust", "E", "09", None),
    "wav/10a04Aa.wav": ("fearful", "A", "10", None),
    "wav/11a05Ta.wav": ("sad", "T", "11", None),
    "wav/12a07Na.wav": ("neutral", "N", "12", None),
    "wav/13b01Xa.wav": (None, "X", "13", "unknown_label"),
    "wav/99a01Fa.wav": (None, "F", "99", "bad_name"),
    "wav/14c01Fa.wav": (None, "F", "14", "bad_name"),
    "wav/recording.wav": (None, "", "", "bad_name"),
}

EVAL_SES01F_IMPRO01 = """% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]

[6.2901 - 8.2357]\tSes01F_impro01_F000\tneu\t[2.5000, 2.5000, 2.5000]
C-E2:\tNeutral;\t()
C-E3:\tNeutral;\t()
A-E3:\tval 3; act 2; dom  2;\t()

[10.0100 - 11.3925]\tSes01F_impro01_M000\txxx\t[2.5000, 3.5000, 3.0000]
C-E2:\tFrustration;\t()
C-E4:\tAnger;\t()

[14.8872 - 18.0175]\tSes01F_impro01_F001\tzzz\t[2.0000, 3.0000, 3.0000]
"""
EVAL_SES01M_SCRIPT01_2 = "[1.0000 - 2.5000]\tSes01M_script01_2_F012\texc\t[4.0000, 4.0000, 3.0000]\n"
EVAL_SES02M_IMPRO03 = "[3.0000 - 4.0000]\tSes02M_impro03_M005\tang\t[1.5000, 4.0000, 4.0000]\n"
# Per-annotator files lie in subfolders and are not label files (this one would relabel M001).
DECOY = "[1.0000 - 2.0000]\tSes01F_impro01_M001\tang\t[1.0000, 1.0000, 1.0000]\n"

S1 = "Session1/sentences/wav"
IEMOCAP = {
    f"{S1}/Ses01F_impro01/Ses01F_impro01_F000.wav": wav(),
    f"{S1}/Ses01F_impro01/Ses01F_impro01_M000.wav": wav(),  # xxx
    f"{S1}/Ses01F_impro01/Ses01F_impro01_M001.wav": wav(),  # no label line
    f"{S1}/Ses01F_impro01/Ses01F_impro01_F001.wav": wav(),  # code zzz
    f"{S1}/Ses01F_impro01/Ses01F_impro02_F000.wav": wav(),  # in another dialog's folder
    f"{S1}/Ses01F_impro01/junk.wav": wav(),
    f"{S1}/Ses01F_impro01/Ses01F_impro01_F000.txt": b"not audio",
    f"{S1}/Ses01M_script01_2/Ses01M_script01_2_F012.wav": wav(),
    "Session1/dialog/wav/Ses01F_impro01.wav": wav(),  # whole dialog: ignored
    "Session1/dialog/EmoEvaluation/Ses01F_impro01.txt": EVAL_SES01F_IMPRO01.encode(),
    "Session1/dialog/EmoEvaluation/Ses01M_script01_2.txt": EVAL_SES01M_SCRIPT01_2.encode(),
    "Session1/dialog/EmoEvaluation/Categorical/Ses01F_impro01_e1_cat.txt": DECOY.encode(),
    "Session2/sentences/wav/Ses02M_impro03/Ses02M_impro03_M005.wav": wav(),
    "Session2/dialog/EmoEvaluation/Ses02M_impro03.txt": EVAL_SES02M_IMPRO03.encode(),
    "README.txt": b"IEMOCAP_full_release",
}
IEMOCAP_EXPECTED = {
    f"{S1}/Ses01F_impro01/Ses01F_impro01_F000.wav": ("neutral", "neu", "Ses01F", None),
    f"{S1}/Ses01F_impro01/Ses01F_impro01_F001.wav": (None, "zzz", "Ses01F", "unknown_label"),
    f"{S1}/Ses01F_impro01/Ses01F_impro01_M000.wav": (None, "xxx", "Ses01M", "unknown_label"),
    f"{S1}/Ses01F_impro01/Ses01F_impro01_M001.wav": (None, "", "Ses01M", "unknown_label"),
    f"{S1}/Ses01F_impro01/Ses01F_impro02_F000.wav": (None, "", "", "bad_name"),
    f"{S1}/Ses01F_impro01/junk.wav": (None, "", "", "bad_name"),
    f"{S1}/Ses01M_script01_2/Ses01M_script01_2_F012.wav": ("excited", "exc", "Ses01F", None),
    "Session2/sentences/wav/Ses02M_impro03/Ses02M_impro03_M005.wav": ("angry", "ang", "Ses02M", None),
}

ESD = {
    "0011/Angry/0011_000351.wav": wav(),
    "0011/Surprise/0011_001401.wav": wav(),
    "0011/0011.txt": "0011_000351\tWhat a day!\tAngry\n".encode(),
    "0012/Neutral/0012_000001.wav": wav(),
    "0012/Happy/0012_000701.wav": wav(),
    "0012/Sad/0012_001051.wav": wav(),
    "0012/Happy/0011_000702.wav": wav(),  # speaker 0011's name in 0012's folder
    "0012/Fear/0012_000002.wav": wav(),  # no emotion Fear
    "0012/Sad/recording.wav": wav(),
    "0012/0012_000003.wav": wav(),  # not in an emotion folder
    "0012/0012.txt": b"transcripts",
    "README.txt": b"ESD",
    "demo/0011_000351.wav": wav(),  # outside the speaker folders
}
ESD_EXPECTED = {
    "0011/Angry/0011_000351.wav": ("angry", "Angry", "0011", None),
    "0011/Surprise/0011_001401.wav": ("surprised", "Surprise", "0011", None),
    "0012/0012_000003.wav": (None, "", "0012", "bad_name"),
    "0012/Fear/0012_000002.wav": (None, "Fear", "0012", "unknown_label"),
    "0012/Happy/0011_000702.wav": (None, "Happy", "0012", "bad_name"),
    "0012/Happy/0012_000701.wav": ("happy", "Happy", "0012", None),
    "0012/Neutral/0012_000001.wav": ("neutral", "Neutral", "0012", None),
    "0012/Sad/0012_001051.wav": ("sad", "Sad", "0012", None),
    "0012/Sad/recording.wav": (None, "Sad", "0012", "bad_name"),
}

ESD_SPLIT = {
    "0001/Angry/train/0001_000351.wav": wav(),
    "0001/Angry/evaluation/0001_000371.wav": wav(),
    "0001/Angry/test/0001_000381.wav": wav(),
    "0001/Sad/other/0001_001051.wav": wav(),  # not a split folder
    "0001/0001.txt": b"transcripts",
}

TREES = {
    "ravdess": (RAVDESS, RAVDESS_EXPECTED),
    "crema-d": (CREMAD, CREMAD_EXPECTED),
    "emodb": (EMODB, EMODB_EXPECTED),
    "iemocap": (IEMOCAP, IEMOCAP_EXPECTED),
    "esd": (ESD, ESD_EXPECTED),
}


def write_local(root, tree: dict[str, bytes]) -> str:
    for rel, data in tree.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return str(root)


def summary(items) -> dict[str, tuple]:
    return {
        it.relpath: (it.label, it.raw_label, it.speaker, it.problem.split(": ", 1)[0] if it.problem else None)
        for it in items
    }


@pytest.fixture
def local():
    return fsspec.filesystem("file")


@pytest.fixture
def memory():
    fs = fsspec.filesystem("memory")
    roots: list[str] = []
    yield fs, roots
    for root in roots:
        if fs.exists(root):
            fs.rm(root, recursive=True)


def write_memory(memory, tree: dict[str, bytes]) -> str:
    fs, roots = memory
    root = f"/corpora-{uuid.uuid4().hex}"
    roots.append(root)
    for rel, data in tree.items():
        fs.pipe_file(f"{root}/{rel}", data)
    return root


# ---------------------------------------------------------------------------- discovery


@pytest.mark.parametrize("name", ADAPTERS)
def test_discover_labels_speakers_and_problems(name, tmp_path, local):
    tree, expected = TREES[name]
    root = write_local(tmp_path / name, tree)
    items = list(CORPORA[name].discover(local, root))
    assert summary(items) == expected
    assert [it.relpath for it in items] == sorted(expected)  # sorted, nothing else yielded
    for it in items:
        assert it.corpus == name
        assert it.path == f"{root}/{it.relpath}" and local.isfile(it.path)
        assert (it.label is None) == (it.problem is not None)
        assert it.label is None or it.label in CANONICAL_LABELS
        assert it.problem is None or it.problem.split(": ", 1)[0] in ("bad_name", "unknown_label")


def test_ravdess_problem_messages(tmp_path, local):
    root = write_local(tmp_path, RAVDESS)
    problems = {it.relpath: it.problem for it in CORPORA["ravdess"].discover(local, root) if it.problem}
    assert "Actor_02" in problems["Actor_02/03-01-04-01-01-01-05.wav"]
    assert "intensity" in problems["Actor_02/03-01-04-03-01-01-02.wav"]
    assert "'09'" in problems["Actor_02/03-01-09-01-01-01-02.wav"]
    assert "take2.wav" in problems["Actor_02/take2.wav"]


def test_cremad_files_directly_under_root(tmp_path, local):
    tree = {rel.removeprefix("AudioWAV/"): data for rel, data in CREMAD.items() if not rel.startswith("AudioMP3/")}
    root = write_local(tmp_path, tree)
    assert get_corpus("auto", local, root).name == "crema-d"
    expected = {rel.removeprefix("AudioWAV/"): value for rel, value in CREMAD_EXPECTED.items()}
    assert summary(CORPORA["crema-d"].discover(local, root)) == expected


def test_iemocap_folds_and_label_lines(tmp_path, local):
    root = write_local(tmp_path, IEMOCAP)
    items = {it.relpath: it for it in CORPORA["iemocap"].discover(local, root)}
    assert {it.fold for rel, it in items.items() if rel.startswith("Session1/")} == {0}
    assert {it.fold for rel, it in items.items() if rel.startswith("Session2/")} == {1}
    assert all(it.split is None for it in items.values())
    problems = {rel.rsplit("/", 1)[1]: it.problem for rel, it in items.items()}
    assert problems["Ses01F_impro01_M000.wav"] == "unknown_label: 'xxx' (annotators did not agree)"
    assert problems["Ses01F_impro01_M001.wav"] == "unknown_label: no label in EmoEvaluation"
    assert "'zzz'" in problems["Ses01F_impro01_F001.wav"]
    # only bracketed turn lines are labels; C-, A-, % and blank lines are not
    assert parse_labels(EVAL_SES01F_IMPRO01) == {
        "Ses01F_impro01_F000": "neu",
        "Ses01F_impro01_M000": "xxx",
        "Ses01F_impro01_F001": "zzz",
    }


def test_esd_splits(tmp_path, local):
    root = write_local(tmp_path, ESD_SPLIT)
    assert get_corpus("auto", local, root).name == "esd"
    items = {it.relpath: it for it in CORPORA["esd"].discover(local, root)}
    assert {rel: (it.split, it.label) for rel, it in items.items() if not it.problem} == {
        "0001/Angry/evaluation/0001_000371.wav": ("dev", "angry"),
        "0001/Angry/test/0001_000381.wav": ("test", "angry"),
        "0001/Angry/train/0001_000351.wav": ("train", "angry"),
    }
    assert items["0001/Sad/other/0001_001051.wav"].problem.startswith("bad_name: ")
    flat = write_local(tmp_path / "flat", ESD)
    assert all(it.split is None for it in CORPORA["esd"].discover(local, flat))


# ---------------------------------------------------------------------------- detection


def test_auto_detects_each_corpus_and_no_other_claims_it(tmp_path, local):
    for name, (tree, _) in TREES.items():
        root = write_local(tmp_path / name, tree)
        assert get_corpus("auto", local, root).name == name
        claimed = [other for other in ADAPTERS if CORPORA[other].detect(local, root)]
        assert claimed == [name]


def test_detect_is_false_on_other_layouts(tmp_path, local):
    write_local(tmp_path / "misc", {"README.txt": b"x", "audio/clip.wav": wav(), "clip.wav": wav()})
    (tmp_path / "empty").mkdir()
    write_local(tmp_path / "near", {"Actor_01/clip.wav": wav(), "wav/clip.wav": wav(), "Session1/x.txt": b"x"})
    for folder in ("misc", "empty", "near", "missing"):
        root = str(tmp_path / folder)
        assert [n for n in ADAPTERS if CORPORA[n].detect(local, root)] == []
        with pytest.raises(ValueError, match="could not recognise"):
            get_corpus("auto", local, root)


def test_manifest_tree_is_left_to_csv(tmp_path, local):
    root = write_local(tmp_path, {"clips/a.wav": wav(), "manifest.csv": b"path,label,speaker\nclips/a.wav,happy,s1\n"})
    assert get_corpus("auto", local, root).name == "csv"


# ---------------------------------------------------------------------------- fsspec


@pytest.mark.parametrize("name", ADAPTERS)
def test_discover_through_memory_filesystem(name, memory):
    fs = memory[0]
    tree, expected = TREES[name]
    root = write_memory(memory, tree)
    assert get_corpus("auto", fs, root).name == name
    items = list(CORPORA[name].discover(fs, root))
    assert summary(items) == expected
    assert all(it.path == f"{root}/{it.relpath}" and fs.isfile(it.path) for it in items)
    # a URI root (as a user would write s3://...) gives the same relative paths
    assert summary(CORPORA[name].discover(fs, f"memory://{root.lstrip('/')}/")) == expected


def test_iemocap_folds_through_memory_filesystem(memory):
    root = write_memory(memory, IEMOCAP)
    folds = {it.relpath.split("/", 1)[0]: it.fold for it in CORPORA["iemocap"].discover(memory[0], root)}
    assert folds == {"Session1": 0, "Session2": 1}
