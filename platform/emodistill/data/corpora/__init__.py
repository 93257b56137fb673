"""Corpus adapters: published layouts -> SourceItems. `detect_format` recognises them."""

from __future__ import annotations

import fsspec

from emodistill.data.corpora.base import AUDIO_EXTENSIONS, CANONICAL_LABELS, Corpus, SourceItem, find_audio
from emodistill.data.corpora.csv_manifest import CsvCorpus
from emodistill.data.corpora.cremad import CremaDCorpus
from emodistill.data.corpora.emodb import EmoDBCorpus
from emodistill.data.corpora.esd import ESDCorpus
from emodistill.data.corpora.iemocap import IemocapCorpus
from emodistill.data.corpora.ravdess import RavdessCorpus

# Order matters for `auto`: an explicit manifest.csv wins (the user said what each file
# is), then the published layouts.
CORPORA: dict[str, Corpus] = {
    c.name: c
    for c in (CsvCorpus(), IemocapCorpus(), RavdessCorpus(), CremaDCorpus(), EmoDBCorpus(), ESDCorpus())
}
FORMATS = ("auto", *CORPORA)


def get_corpus(fmt: str, fs: fsspec.AbstractFileSystem, root: str) -> Corpus:
    """The adapter for ``fmt``; with ``auto``, the first whose layout matches ``root``."""
    if fmt != "auto":
        if fmt not in CORPORA:
            raise ValueError(f"unknown format {fmt!r}; choose one of {FORMATS}")
        return CORPORA[fmt]
    for corpus in CORPORA.values():
        if corpus.detect(fs, root):
            return corpus
    raise ValueError(
        f"could not recognise the corpus at {root}: not RAVDESS, CREMA-D, EmoDB, IEMOCAP or ESD, "
        "and no manifest.csv (path,label,speaker) -- pass --format"
    )


__all__ = [
    "AUDIO_EXTENSIONS",
    "CANONICAL_LABELS",
    "CORPORA",
    "FORMATS",
    "Corpus",
    "CsvCorpus",
    "SourceItem",
    "find_audio",
    "get_corpus",
]
