"""Image sources and the one calibration set.

An image source is a folder (recursive, class sub-folders optional) or a list file of
relative paths, one per line, as in MLPerf's calibration lists (``# comments`` and blank
lines are ignored; a line ``<sha256>  <path>``, as written beside every artifact, also
checks the file's hash). The calibration set samples it deterministically, balanced across
classes, decodes each image once, and is shared by every target and backend.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from pathlib import Path

import numpy as np

from .console import progress, warn
from .errors import BadInput
from .hashing import sha256_file
from .preprocess import IMAGE_SUFFIXES, PreprocessSpec, UndecodableImage, list_images, load_image

MIN_DECODED = 10
WARN_BELOW = 100
_HASHED_LINE = re.compile(r"^([0-9a-fA-F]{64})\s+(.+)$")


@dataclasses.dataclass(frozen=True)
class ImageSource:
    """Candidate images: absolute paths, their paths relative to ``root``, and class names."""

    root: Path
    files: tuple[Path, ...]
    classes: tuple[str, ...] | None  # class sub-folder names, sorted (Keras's order)
    class_of: tuple[int | None, ...]  # per file, index into classes
    origin: str  # the folder or list file given
    expected_sha256: tuple[str | None, ...] = ()

    def rel(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()


def _classes_from_folder(root: Path, files: list[Path]) -> tuple[tuple[str, ...] | None, list[int | None]]:
    """Class = first path component below root, when every image sits in a sub-folder."""
    firsts = [f.relative_to(root).parts for f in files]
    if not files or any(len(parts) < 2 for parts in firsts):
        return None, [None] * len(files)
    names = tuple(sorted({parts[0] for parts in firsts}))
    if len(names) < 2:
        return None, [None] * len(files)
    index = {n: i for i, n in enumerate(names)}
    return names, [index[parts[0]] for parts in firsts]


def open_source(path: str | Path, root: str | Path | None = None) -> ImageSource:
    """A folder of images or a list file (paths relative to ``root``, default its folder)."""
    path = Path(path)
    if not path.exists():
        raise BadInput(f"image source {path} does not exist; pass a folder of images or a list file")
    if path.is_dir():
        files = list_images(path)
        if not files:
            raise BadInput(f"folder {path} holds no images ({', '.join(IMAGE_SUFFIXES)}); point to a folder of images")
        classes, class_of = _classes_from_folder(path, files)
        return ImageSource(path.resolve(), tuple(f.resolve() for f in files), classes, tuple(class_of), str(path))
    return _open_list(path, Path(root) if root is not None else path.parent)


@dataclasses.dataclass(frozen=True)
class ListEntry:
    lineno: int
    rel: str
    path: Path  # resolved, inside the root
    sha256: str | None  # from a "<sha256>  path" line (calibration.txt)
    label: str | None  # from a "path label" line


def _parse_line(line: str, lineno: int, root_abs: Path, list_file: Path) -> tuple[ListEntry, bool]:
    """One list line -> its entry and whether the file exists."""
    where = f"{list_file}:{lineno}"
    expected = None
    m = _HASHED_LINE.match(line)
    if m:
        expected, line = m.group(1).lower(), m.group(2).strip()
    if "\0" in line:
        raise BadInput(f"{where}: the line holds a NUL byte; write one relative path per line")
    rel, label = line, None
    if not _is_file(root_abs / line) and len(line.rsplit(None, 1)) == 2:
        rel, label = line.rsplit(None, 1)
    try:
        full = (root_abs / rel).resolve()
    except (OSError, RuntimeError) as exc:  # a symbolic-link loop
        raise BadInput(f"{where}: '{rel[:200]}' cannot be resolved ({exc}); fix the line or the links") from None
    if Path(rel).is_absolute() or not full.is_relative_to(root_abs):
        raise BadInput(f"{where}: path '{rel[:200]}' is outside the list's root {root_abs}; use paths relative to it")
    return ListEntry(lineno, rel, full, expected, label), _is_file(full)


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:  # e.g. a name longer than the file system allows: no such file
        return False


def _check_repeat(first: ListEntry, again: ListEntry, list_file: Path) -> None:
    """The same image listed twice must say the same thing both times."""
    where = f"{list_file}:{again.lineno}: '{again.rel}' is listed again (first on line {first.lineno})"
    if first.label != again.label:
        raise BadInput(f"{where} with label {again.label!r}, not {first.label!r}; give each image one label")
    if first.sha256 and again.sha256 and first.sha256 != again.sha256:
        raise BadInput(f"{where} with a different sha256; keep the line that matches the file")


def read_list(list_file: Path, root: Path, *, root_hint: str) -> list[ListEntry]:
    """The one list-file reader. A line is a path relative to ``root``, optionally preceded by
    its sha256 (as calibration.txt writes) or followed by a label (``path label``); ``#``
    comments and blank lines are skipped. Paths outside the root and missing files are errors.
    An image listed more than once is used once (first line kept), with a warning; listed
    again with another label or sha256, it is an error."""
    try:
        lines = list_file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"list file {list_file} cannot be read as text: {exc}") from None
    root_abs = root.resolve()
    if not root_abs.is_dir():
        raise BadInput(f"list root {root} is not a folder; {root_hint}")
    first: dict[Path, ListEntry] = {}
    missing, repeats = [], []
    for lineno, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        entry, found = _parse_line(line, lineno, root_abs, list_file)
        if not found:
            missing.append(line[:200])
            continue
        seen = first.setdefault(entry.path, entry)
        if seen is not entry:
            _check_repeat(seen, entry, list_file)
            repeats.append(f"{entry.rel} (line {lineno}, first on line {seen.lineno})")
            if entry.sha256 and not seen.sha256:  # keep the check the repeat carries
                first[entry.path] = dataclasses.replace(seen, sha256=entry.sha256)
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise BadInput(f"{list_file} names {len(missing)} missing file(s) under {root}: {shown}; fix the list or {root_hint}")
    if repeats:
        shown = ", ".join(repeats[:3]) + (f" and {len(repeats) - 3} more" if len(repeats) > 3 else "")
        warn(f"{len(repeats)} duplicate line(s) in {list_file}: {shown}; each image used once")
    return list(first.values())


def _open_list(list_file: Path, root: Path) -> ImageSource:
    entries = read_list(list_file, root, root_hint="pass --calibration-root")
    if not entries:
        raise BadInput(f"list file {list_file} names no images")
    files = [e.path for e in entries]
    root_abs = root.resolve()
    classes, class_of = _classes_from_folder(root_abs, files)
    return ImageSource(root_abs, tuple(files), classes, tuple(class_of), str(list_file), tuple(e.sha256 for e in entries))


def sample_order(source: ImageSource, seed: int) -> list[int]:
    """A deterministic permutation of the source, round-robin across classes (balanced)."""
    rng = np.random.default_rng(seed)
    if source.classes is None:
        return [int(i) for i in rng.permutation(len(source.files))]
    per_class: list[list[int]] = [[] for _ in source.classes]
    for i, c in enumerate(source.class_of):
        per_class[c].append(i)
    queues = [[members[j] for j in rng.permutation(len(members))] for members in per_class]
    order: list[int] = []
    depth = 0
    while len(order) < len(source.files):
        for q in queues:
            if depth < len(q):
                order.append(q[depth])
        depth += 1
    return order


@dataclasses.dataclass
class CalibrationSet:
    """The decoded, preprocessed calibration images (decoded once, shared by every target)."""

    source: ImageSource
    seed: int
    files: list[Path]
    sha256: list[str]
    images: np.ndarray  # (N, H, W, 3) float32, preprocessed
    spec: PreprocessSpec
    skipped: list[str]

    def __len__(self) -> int:
        return len(self.files)

    def take(self, n: int) -> CalibrationSet:
        """The first n images of the deterministic sample (a smaller calibration size)."""
        n = min(n, len(self.files))
        return dataclasses.replace(self, files=self.files[:n], sha256=self.sha256[:n], images=self.images[:n])

    def batches(self):
        """The one calibration iterator: one (1, H, W, 3) float32 image at a time."""
        for i in range(len(self.images)):
            yield self.images[i : i + 1]

    def list_text(self) -> str:
        """calibration.txt beside each artifact: sha256sum-style, readable back as a list file."""
        header = (
            f"# xception-edge calibration list: {len(self.files)} images, seed {self.seed}, "
            f"from {self.source.origin}\n# root: {self.source.root}\n"
        )
        return header + "".join(f"{h}  {self.source.rel(f)}\n" for h, f in zip(self.sha256, self.files))

    def summary(self) -> dict:
        return {
            "count": len(self.files),
            "seed": self.seed,
            "source": self.source.origin,
            "classes": len(self.source.classes) if self.source.classes else None,
            "list_sha256": hashlib.sha256(self.list_text().split("\n", 2)[-1].encode()).hexdigest(),
            "skipped_undecodable": len(self.skipped),
        }


def _listed_sha256(path: Path, want: str, origin: str) -> str:
    """The file's sha256, which must be the one its list gives (checked before decoding)."""
    try:
        digest = sha256_file(path)
    except OSError as exc:
        raise BadInput(
            f"{path}, listed in {origin}, cannot be read ({exc.strerror or exc}); restore it or write a new list"
        ) from None
    if digest != want:
        raise BadInput(
            f"{path}: sha256 {digest[:12]}… differs from {want[:12]}… in {origin}; the file changed since the list was written"
        )
    return digest


def build_calibration(source: ImageSource, spec: PreprocessSpec, num: int, seed: int) -> CalibrationSet:
    """Sample ``num`` images, decode and preprocess them once; undecodable ones are skipped,
    listed in a warning, and replaced by the next images of the deterministic order. An image
    listed with its sha256 (calibration.txt) must still have it, checked before decoding, and
    must decode: otherwise the list no longer describes the files, which is an error."""
    if num < 1:
        raise BadInput(f"--num-calibration {num} must be at least 1")
    order = sample_order(source, seed)
    expected = dict(zip(source.files, source.expected_sha256)) if source.expected_sha256 else {}
    files, hashes, arrays, skipped = [], [], [], []
    pos = 0
    with progress(f"Decoding calibration images ({spec.height}x{spec.width})", total=min(num, len(order))) as task:
        while pos < len(order) and len(files) < num:
            path = source.files[order[pos]]
            pos += 1
            want = expected.get(path)
            digest = _listed_sha256(path, want, source.origin) if want else None
            try:
                arrays.append(load_image(path, spec))
            except UndecodableImage as exc:
                if want:  # it decoded when the list was written
                    raise BadInput(
                        f"{path}, listed with its sha256 in {source.origin}, no longer decodes ({exc}); "
                        "restore the image or write a new list"
                    ) from None
                skipped.append(str(exc))
                continue
            digest = digest or sha256_file(path)
            files.append(path)
            hashes.append(digest)
            task.advance()
    if skipped:
        shown = "; ".join(skipped[:5]) + (f"; and {len(skipped) - 5} more" if len(skipped) > 5 else "")
        warn(f"{len(skipped)} calibration file(s) could not be decoded and were skipped: {shown}")
    if len(files) < MIN_DECODED and len(files) < num:
        raise BadInput(
            f"only {len(files)} image(s) in {source.origin} could be decoded (need at least {MIN_DECODED}); "
            "add calibration images"
        )
    if len(files) < num:
        warn(f"{source.origin} has only {len(files)} decodable images; calibrating on {len(files)}, not {num}")
    if len(files) < WARN_BELOW:
        warn(f"calibrating on {len(files)} images; {WARN_BELOW} or more are recommended for stable int8 ranges")
    images = np.stack(arrays) if arrays else np.empty((0, spec.height, spec.width, 3), np.float32)
    return CalibrationSet(source, seed, files, hashes, images, spec, skipped)


def write_list(source: ImageSource, num: int, seed: int, out: Path) -> int:
    """`calibration make`: a list of relative paths (MLPerf style), balanced and deterministic."""
    if num < 1:
        raise BadInput(f"--num {num} must be at least 1")
    order = sample_order(source, seed)[:num]
    body = "".join(f"{source.rel(source.files[i])}\n" for i in order)
    header = f"# xception-edge calibration list: {len(order)} images, seed {seed}, relative to {source.origin}\n"
    from .artifact import atomic_write_text

    atomic_write_text(out, header + body)
    return len(order)
