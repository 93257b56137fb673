"""Predict many files: expand paths, directories and globs; decode ahead; one result per
file, in order; a file that fails is a result with its reason, never the end of the run."""

from __future__ import annotations

import glob
import os
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from emodistill.data.audio import AudioError
from emodistill.inference.recognizer import EmotionPrediction, EmotionRecognizer

# What a directory walk picks up (a file named explicitly is tried whatever its name).
AUDIO_SUFFIXES = frozenset(
    ".wav .wave .flac .ogg .oga .opus .mp3 .aiff .aif .aifc .au .snd .caf .w64 .rf64 .sph .nist .voc .htk .sd2 .mat .pvf .xi .avr .wve".split()
)
_GLOB_CHARS = set("*?[")


@dataclass
class FileResult:
    file: str
    prediction: EmotionPrediction | None = None
    code: str | None = None  # why the file failed (AudioError reasons, not_found, ...)
    message: str | None = None

    @property
    def ok(self) -> bool:
        return self.prediction is not None


@dataclass
class Inputs:
    files: list[str]
    expanded: bool  # a directory or a glob was given (worth a progress bar)


def expand_inputs(items: Sequence[str]) -> Inputs:
    """Files as given; directories walked recursively for audio files (sorted); globs
    (``**`` recursive) expanded. Something that does not exist stays, to be reported."""
    files: list[str] = []
    expanded = False
    for item in items:
        if os.path.isdir(item):
            expanded = True
            found = []
            for root, dirs, names in os.walk(item):
                dirs.sort()
                found += [os.path.join(root, n) for n in names if os.path.splitext(n)[1].lower() in AUDIO_SUFFIXES]
            files += sorted(found)
        elif not os.path.exists(item) and _GLOB_CHARS & set(item):
            expanded = True
            matches = sorted(p for p in glob.glob(item, recursive=True) if os.path.isfile(p))
            files += matches if matches else [item]  # an empty glob is reported like a missing file
        else:
            files.append(item)
    return Inputs(files, expanded)


def _load(recognizer: EmotionRecognizer, file: str) -> np.ndarray | FileResult:
    try:
        return recognizer.load_audio(file)
    except AudioError as err:
        return FileResult(file, code=err.reason, message=str(err))
    except OSError as err:
        return FileResult(file, code="unreadable", message=f"cannot read the file: {err.strerror or err}")


def predict_files(recognizer: EmotionRecognizer, files: Iterable[str], prefetch: int = 4) -> Iterator[FileResult]:
    """One :class:`FileResult` per file, in order. Decoding runs in a background thread
    ``prefetch`` files ahead of the model (soundfile and soxr release the GIL)."""
    files = iter(files)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="decode") as pool:
        pending: deque[tuple[str, Future]] = deque()

        def refill() -> None:
            while len(pending) < max(1, prefetch):
                file = next(files, None)
                if file is None:
                    return
                pending.append((file, pool.submit(_load, recognizer, file)))

        refill()
        while pending:
            file, future = pending.popleft()
            refill()
            loaded = future.result()
            if isinstance(loaded, FileResult):
                yield loaded
                continue
            try:
                yield FileResult(file, prediction=recognizer.predict_waves([loaded])[0])
            except (RuntimeError, ValueError) as err:  # the model itself failed on this clip
                yield FileResult(file, code="model_error", message=str(err).splitlines()[0][:300])


__all__ = ["AUDIO_SUFFIXES", "FileResult", "Inputs", "expand_inputs", "predict_files"]
