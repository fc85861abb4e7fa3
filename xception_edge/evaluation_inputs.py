"""What `evaluate` checks before any model runs (no TensorFlow): the artifact folders and their
manifests, that they share one preprocessing and label list, the --report folder, and whether
each artifact was converted from --model (by sha256)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from . import console
from .artifact import MANIFEST, read_manifest
from .calibration import sha256_file
from .errors import BadInput
from .preprocess import PreprocessSpec
from .records import Manifest

RESULTS = "results"  # REPORT/results/: one JSON per finished row, for --resume


@dataclasses.dataclass(frozen=True)
class Artifact:
    folder: Path
    manifest: Manifest
    manifest_sha256: str

    @property
    def name(self) -> str:
        return self.folder.name


# ------------------------------------------------------------------ checks (no TensorFlow)
def discover_artifacts(root: Path, report: Path | None = None) -> list[Artifact]:
    """ROOT itself when it is an artifact, else its sub-folders; each must have a manifest whose
    sha256 values match (hidden folders and the report folder are skipped)."""
    root = Path(root)
    if not root.is_dir():
        raise BadInput(f"--artifacts {root} is not a folder; pass the --out folder of `xception-edge convert`")
    if (root / MANIFEST).is_file():
        folders = [root]
    else:
        skip = Path(report).resolve() if report is not None else None
        folders = [
            p
            for p in sorted(root.iterdir())
            if p.is_dir()
            and not p.name.startswith(".")
            and ((p / MANIFEST).is_file() or skip is None or not skip.is_relative_to(p.resolve()))
        ]
        if not folders:
            raise BadInput(f"--artifacts {root} holds no artifact folders (sub-folders with {MANIFEST}); convert a model first")
    out = []
    for folder in folders:
        if report is not None and Path(report).resolve().is_relative_to(folder.resolve()):
            raise BadInput(
                f"--report {report} lies inside the artifact folder {folder}; write the report elsewhere "
                "(an artifact folder holds only what its manifest lists)"
            )
        manifest = read_manifest(folder)  # no manifest, or a sha256 mismatch: one-line BadInput
        out.append(Artifact(folder, manifest, sha256_file(folder / MANIFEST)))
    return out


def shared_preprocessing(arts: list[Artifact]) -> tuple[PreprocessSpec, list[str]]:
    """The one PreprocessSpec and label list every artifact must share."""
    first = arts[0]
    spec, labels = first.manifest.preprocessing, list(first.manifest.labels)
    for a in arts[1:]:
        other = a.manifest.preprocessing
        if other != spec:
            diff = [
                f"{k} {getattr(spec, k)!r} vs {getattr(other, k)!r}"
                for k in spec.to_dict()
                if getattr(spec, k) != getattr(other, k)
            ]
            raise BadInput(
                f"artifacts {first.name} and {a.name} use different preprocessing ({'; '.join(diff)}); "
                "evaluate them separately (one --artifacts folder per preprocessing)"
            )
        theirs = list(a.manifest.labels)
        if theirs != labels:
            where = next((i for i, (x, y) in enumerate(zip(labels, theirs)) if x != y), min(len(labels), len(theirs)))
            raise BadInput(
                f"artifacts {first.name} and {a.name} disagree on labels ({len(labels)} vs {len(theirs)} classes; first "
                f"difference at index {where}: {labels[where] if where < len(labels) else '—'!r} vs "
                f"{theirs[where] if where < len(theirs) else '—'!r}); evaluate artifacts of one model together"
            )
    return spec, labels


def _check_report_dir(report: Path) -> None:
    if report.exists() and not report.is_dir():
        raise BadInput(f"--report {report} is a file; pass a folder for report.json, report.md and report.html")
    try:
        (report / RESULTS).mkdir(parents=True, exist_ok=True)
        probe = report / RESULTS / f".probe-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise BadInput(f"--report {report} is not writable ({exc.strerror or exc}); choose a writable folder") from None


def _model_hash(spec: str) -> str | None:
    """sha256 of --model as convert records it (a file or SavedModel folder), without TensorFlow."""
    from .model_io import KERAS_XCEPTION, _hash_path

    path = Path(spec)
    if spec.lower() == KERAS_XCEPTION or not path.exists():
        return None  # keras:xception: its hash is of the weights, known only once built
    return _hash_path(path)


def same_source_model(art: Artifact, src_sha) -> bool:
    """True only when the artifact's manifest records the --model's own sha256 (for keras:xception,
    the sha256 of its weights); anything unconfirmed is False and warned about (`gate` fails it)."""
    made_from = art.manifest.source_sha256
    if isinstance(src_sha, str) and src_sha and made_from == src_sha:
        return True
    if isinstance(src_sha, str) and src_sha and isinstance(made_from, str) and made_from:
        why = f"was converted from another model (sha256 {made_from[:12]}…, --model is {src_sha[:12]}…)"
    else:
        why = "cannot be confirmed to come from --model (no sha256 of its source model or of --model)"
    console.warn(f"{art.name} {why}: its agreement with --model says little, and `gate` fails it")
    return False
