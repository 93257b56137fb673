"""`csv`: any folder of audio plus a manifest (`manifest.csv`: path,label,speaker[,split][,fold]).

Paths are relative to the folder (or absolute / URIs). Labels are taken as written
(lower-cased, stripped): a user's own corpus brings its own label names.
"""

from __future__ import annotations

import csv
import io
import posixpath
from collections.abc import Iterator

from emodistill.data.corpora.base import Corpus, SourceItem

REQUIRED = ("path", "label", "speaker")


class CsvCorpus(Corpus):
    name = "csv"

    def __init__(self, manifest: str = "manifest.csv"):
        self.manifest = manifest

    def detect(self, fs, root: str) -> bool:
        return fs.isfile(posixpath.join(root.rstrip("/"), self.manifest))

    def discover(self, fs, root: str) -> Iterator[SourceItem]:
        root = root.rstrip("/")
        manifest = posixpath.join(root, self.manifest)
        if not fs.isfile(manifest):
            raise FileNotFoundError(f"no manifest at {manifest} (expected columns {', '.join(REQUIRED)})")
        with fs.open(manifest, "rb") as fh:
            text = fh.read().decode("utf-8-sig")
        reader = csv.DictReader(io.StringIO(text))
        columns = [c.strip() for c in (reader.fieldnames or [])]
        missing = [c for c in REQUIRED if c not in columns]
        if missing:
            raise ValueError(f"{manifest}: missing columns {missing}; found {columns}")
        corpus = posixpath.basename(root) or "csv"
        items = []
        for line, row in enumerate(reader, start=2):
            row = {k.strip(): (v or "").strip() for k, v in row.items() if k}
            rel = row["path"]
            path = rel if ("://" in rel or rel.startswith("/")) else posixpath.join(root, rel)
            base = {"path": path, "relpath": rel, "speaker": row["speaker"], "corpus": corpus}
            base["split"] = row.get("split") or None
            problem = None
            fold = row.get("fold") or None
            if fold is not None:
                try:
                    base["fold"] = int(fold)
                except ValueError:
                    problem = f"bad_row: line {line}: fold {fold!r} is not an integer"
            label = row["label"].lower()
            if not rel:
                problem = f"bad_row: line {line}: empty path"
            elif not label:
                problem = f"unknown_label: line {line}: empty label"
            elif not row["speaker"]:
                problem = f"bad_row: line {line}: empty speaker"
            elif not fs.isfile(path):
                problem = f"missing: {rel} is listed in the manifest but does not exist"
            items.append(SourceItem(**base, label=label or None, raw_label=row["label"], problem=problem))
        return iter(sorted(items, key=lambda it: it.relpath))
