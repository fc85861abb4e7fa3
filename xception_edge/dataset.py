"""Labelled images for accuracy (`evaluate`, `bench --data`), numpy + stdlib only.

Two forms:

- a folder with one sub-folder per class, named as in the artifact's ``labels.txt``
  (images directly under the folder, with no class sub-folders, are unlabelled);
- a list file, one image a line: ``relative/path.jpg<whitespace>label``, where ``label`` is a
  class name from ``labels.txt`` or its 0-based index; paths are relative to the list file's
  folder (a path may contain spaces: the label is the last word). ``# comments`` and blank
  lines are ignored. A line holding only a path is an unlabelled image (so a calibration list,
  with or without the ``<sha256>`` column of ``calibration.txt``, reads as unlabelled images).
  An image listed twice with the same label is used once (with a warning); with two different
  labels (compared as written) it is an error.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from pathlib import Path

from .errors import BadInput
from .preprocess import IMAGE_SUFFIXES

_INDEX = re.compile(r"[0-9]{1,9}")  # a label given as a class index (ASCII digits only)


@dataclasses.dataclass(frozen=True)
class LabelledImages:
    root: Path  # keys are paths relative to this folder
    files: tuple[Path, ...]
    targets: tuple[int | None, ...]  # index into the labels, None when unlabelled
    origin: str  # the folder or list file given
    form: str  # "folders" | "list"

    @property
    def keys(self) -> list[str]:
        return [f.relative_to(self.root).as_posix() for f in self.files]

    @property
    def labelled(self) -> bool:
        return all(t is not None for t in self.targets)

    def sha256(self, labels: list[str]) -> str:
        """Hash of the data list: every image's relative path, label and content sha256."""
        from .calibration import sha256_file

        h = hashlib.sha256()
        for key, path, t in zip(self.keys, self.files, self.targets):
            label = "" if t is None else labels[t]
            h.update(f"{key}\t{label}\t{sha256_file(path)}\n".encode())
        return h.hexdigest()


def _names(items, limit: int = 8) -> str:
    items = list(items)
    return ", ".join(items[:limit]) + (f", … ({len(items)} in all)" if len(items) > limit else "")


def labelled_images(data: str | Path, labels: list[str], *, require_labels: bool = False) -> LabelledImages:
    """The images of ``data`` with their class index in ``labels``. A class name that is not
    in ``labels`` is an error listing both sides."""
    data = Path(data)
    if not data.exists():
        raise BadInput(f"data {data} does not exist; pass a folder with class sub-folders or a labelled list file")
    if data.is_dir():
        out = _from_folder(data, labels)
    else:
        out = _from_list(data, labels)
    if require_labels and not out.labelled:
        raise BadInput(
            f"{data}: images without a label (e.g. {out.keys[out.targets.index(None)]}); put each class's images in a "
            "sub-folder named as in labels.txt, or pass a list file of 'path label' lines"
        )
    return out


def _from_folder(data: Path, labels: list[str]) -> LabelledImages:
    from .calibration import open_source

    src = open_source(data)
    if src.classes is None:
        return LabelledImages(src.root, src.files, (None,) * len(src.files), str(data), "folders")
    unknown = [c for c in src.classes if c not in labels]
    if unknown:
        raise BadInput(
            f"{data}: class folder(s) {_names(unknown, 5)} are not in the artifact's labels.txt ({_names(labels)}); "
            "rename the folders or use the right artifact"
        )
    index = {name: i for i, name in enumerate(labels)}
    return LabelledImages(src.root, src.files, tuple(index[src.classes[c]] for c in src.class_of), str(data), "folders")


def _from_list(list_file: Path, labels: list[str]) -> LabelledImages:
    from .calibration import read_list

    root = list_file.parent.resolve()
    index = {name: i for i, name in enumerate(labels)}
    files, targets, unknown = [], [], []
    for e in read_list(list_file, root, root_hint="use paths relative to the list file's folder"):
        if e.path.suffix.lower() not in IMAGE_SUFFIXES:
            raise BadInput(f"{list_file}:{e.lineno}: '{e.rel}' is not an image ({', '.join(IMAGE_SUFFIXES)})")
        target = None
        if e.label is not None:
            if e.label in index:
                target = index[e.label]
            elif _INDEX.fullmatch(e.label) and int(e.label) < len(labels):
                target = int(e.label)
            else:
                unknown.append(e.label)
        files.append(e.path)
        targets.append(target)
    if unknown:
        raise BadInput(
            f"{list_file}: label(s) {_names(sorted(set(unknown)), 5)} are not in the artifact's labels.txt "
            f"({_names(labels)}) nor an index below {len(labels)}; fix the list or use the right artifact"
        )
    if not files:
        raise BadInput(f"list file {list_file} names no images; write one 'relative/path.jpg label' per line")
    return LabelledImages(root, tuple(files), tuple(targets), str(list_file), "list")
