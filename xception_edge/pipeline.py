"""convert: profile -> checks -> model -> calibration (decoded once) -> convert -> verify -> manifest.

Cheap checks (targets, --out, calibration source, options) run before TensorFlow is imported;
the model loads once and the calibration images are decoded once for every target.
"""

from __future__ import annotations

import dataclasses
import datetime
import tempfile
import time
from importlib import metadata
from pathlib import Path

import numpy as np

from . import __version__, console, interrupts
from .artifact import check_writable_dir, child_dir, output_lock, staged_dir, write_manifest
from .calibration import CalibrationSet, ImageSource, build_calibration, open_source, sample_order
from .converters import converter_for
from .errors import BackendUnavailable, BadInput, VerificationFailed, XceptionEdgeError
from .exports import Exports
from .hostinfo import host
from .model_io import KERAS_XCEPTION, KerasXceptionOptions, SourceModel, check_xception_options, load_source, resolve_labels
from .preprocess import PreprocessSpec, load_images
from .runtime import open_artifact
from .targets import resolve_targets
from .profiles import TargetProfile
from .records import Manifest, Verification
from .verify import is_undecided, verify
from .transforms.variants import variant_key


@dataclasses.dataclass(frozen=True)
class ConvertRequest:
    model: str
    targets: tuple[str, ...]
    out: Path
    calibration: Path | None = None
    calibration_root: Path | None = None
    num_calibration: int | None = None  # None: each profile's calibration_size
    seed: int = 0
    verify: bool = True
    verify_data: Path | None = None
    labels: Path | None = None
    force: bool = False
    unsafe_model: bool = False
    xception: KerasXceptionOptions = KerasXceptionOptions()
    resize: str = "resize"
    crop_fraction: float = 0.875
    interpolation: str = "bilinear"
    max_drop: float | None = None  # accuracy budget: top-1 drop in pp on `validation`
    validation: Path | None = None  # labelled images for --max-drop
    strict: bool = False  # validation images that are calibration images: an error, not a warning
    transforms: tuple[str, ...] | None = None  # --transform: instead of the profiles' own (() turns them off)


@dataclasses.dataclass
class TargetResult:
    target: str
    backend: str
    precision: str
    path: str | None
    size_bytes: int | None
    seconds: float
    verification: dict | None
    error: str | None = None
    float_layers: list[str] | None = None  # --max-drop: layers kept in float
    float_mac_share: float | None = None
    drop_pp: float | None = None  # --max-drop: top-1 drop on the validation images

    @property
    def ok(self) -> bool:
        return self.error is None


def _tool_versions() -> dict[str, str]:
    from . import backends

    out = {"xception-edge": __version__}
    dists = ["numpy", "pillow"] + [d for spec in backends.registry().values() for d in spec.tools]
    for dist in dict.fromkeys(dists):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def precheck(req: ConvertRequest) -> tuple[list[TargetProfile], ImageSource | None, ImageSource | None]:
    """Everything that can be checked without TensorFlow."""
    if req.seed < 0:
        raise BadInput(f"--seed {req.seed} must be 0 or more (numpy's generator takes no negative seed)")
    from .transforms.variants import check_names, with_transforms

    if req.transforms is not None:
        check_names(req.transforms, "--transform")
    profiles = with_transforms(resolve_targets(req.targets), req.transforms)
    check_installed(profiles)
    if req.num_calibration is not None and req.num_calibration < 1:
        raise BadInput(f"--num-calibration {req.num_calibration} must be at least 1")
    if req.model.lower() == KERAS_XCEPTION:
        check_xception_options(req.xception)
    check_writable_dir(req.out)
    for p in profiles:
        final = child_dir(req.out, p.name, f"{p.source}: target name")
        if final.exists() and not req.force:
            raise BadInput(f"{final} already exists; pass --force to overwrite it")
    if req.max_drop is not None:
        if req.validation is None:
            raise BadInput(
                f"--max-drop {req.max_drop:g} needs --validation DIR: labelled held-out images (class sub-folders "
                "or a list file) to measure the top-1 drop on"
            )
        if not req.max_drop >= 0:
            raise BadInput(f"--max-drop {req.max_drop} must be a non-negative number of percentage points, e.g. 1.0")
        if not req.validation.exists():
            raise BadInput(f"--validation {req.validation} does not exist; pass a folder of labelled images or a list file")
    elif req.validation is not None:
        raise BadInput(f"--validation {req.validation} is only used with --max-drop PP; add the budget or drop --validation")
    needs_calib = [p.name for p in profiles if p.precision.needs_calibration]
    if needs_calib and req.calibration is None:
        raise BadInput(f"int8 target(s) {', '.join(needs_calib)} need calibration images; pass --calibration DIR or LIST")
    calib_src = open_source(req.calibration, req.calibration_root) if req.calibration is not None else None
    verify_src = open_source(req.verify_data) if req.verify_data is not None else None
    if req.verify and calib_src is None and verify_src is None:
        raise BadInput("verification needs images: pass --calibration DIR, --verify-data DIR, or --no-verify")
    return profiles, calib_src, verify_src


def check_installed(profiles: list[TargetProfile]) -> None:
    """Every module each target's converter needs is installed (looked up, not imported)."""
    from . import backends

    for p in profiles:
        missing = backends.get(p.backend).missing(p.precision)
        if missing is not None:
            raise BackendUnavailable(*missing, f"target {p.name} ({p.backend} backend)")


def precheck_source(req: ConvertRequest, profiles: list[TargetProfile], src: SourceModel) -> list[TargetProfile]:
    """What can be checked once the model is loaded, before anything is decoded or converted:
    transforms' and --max-drop's need for Keras layers, and every int8 profile's ignored_scope
    names. The profiles to convert (a SavedModel input drops the profiles' own transforms)."""
    from . import backends, scope
    from .transforms.variants import check_source

    profiles = check_source(profiles, src, req.model, asked=req.transforms is not None)
    if req.max_drop is not None and src.keras_model is None:
        raise BadInput(
            f"--max-drop needs a Keras model (.keras/.h5) to name the layers it keeps in float; {req.model} is a SavedModel"
        )
    for p in profiles:
        scope.check(p, src, backends.get(p.backend))
    return profiles


def _verification_images(
    spec: PreprocessSpec,
    n: int,
    seed: int,
    calib: CalibrationSet | None,
    calib_src: ImageSource | None,
    verify_src: ImageSource | None,
) -> tuple[np.ndarray, str]:
    """Held-out images for verification: --verify-data, else calibration-source images that were
    not used for calibration, else (with a warning) the calibration images themselves."""
    if verify_src is not None:
        paths = [verify_src.files[i] for i in sample_order(verify_src, seed)[:n]]
        origin = f"images of {verify_src.origin}"
    else:
        used = set(calib.files) if calib is not None else set()
        paths = [calib_src.files[i] for i in sample_order(calib_src, seed) if calib_src.files[i] not in used][:n]
        origin = f"held-back images of {calib_src.origin}"
        if len(paths) < min(n, 8) and calib is not None and len(calib):
            console.warn(
                f"{calib_src.origin} has no images left after calibration; verifying on calibration images "
                "(weaker: pass --verify-data DIR with held-out images)"
            )
            images = calib.images[:n]
            return images, f"{len(images)} calibration images of {calib_src.origin}"
    images, failed = load_images(paths, spec)
    if failed:
        console.warn(f"{len(failed)} verification image(s) could not be decoded and were skipped: {'; '.join(failed[:3])}")
    if len(images) == 0:
        raise BadInput(f"no verification image could be decoded from {origin.split(' of ', 1)[1]}; pass --verify-data DIR")
    return images, f"{len(images)} {origin}"


def run_convert(req: ConvertRequest) -> list[TargetResult]:
    """Convert under an exclusive lock on --out (a run that writes nothing leaves no --out behind)."""
    with output_lock(req.out, "--out"):
        return _run_locked(req)


def _run_locked(req: ConvertRequest) -> list[TargetResult]:
    profiles, calib_src, verify_src = precheck(req)
    src = load_source(req.model, unsafe=req.unsafe_model, xception=req.xception)
    for w in src.warnings:
        console.warn(w)
    profiles = precheck_source(req, profiles, src)
    labels, labels_from = resolve_labels(
        src.num_classes, req.labels, calib_src.classes if calib_src else None, calib_src.origin if calib_src else None
    )
    spec = PreprocessSpec(src.height, src.width, req.resize, req.crop_fraction, req.interpolation)

    sizes = [req.num_calibration or p.calibration_size for p in profiles if p.precision.needs_calibration]
    calib = build_calibration(calib_src, spec, max(sizes), req.seed) if sizes else None

    images = reference = None
    images_from = ""
    if req.verify:
        n_verify = max(p.verify.num_images for p in profiles)
        images, images_from = _verification_images(spec, n_verify, req.seed, calib, calib_src, verify_src)
        reference = src.predict(images)
        if is_undecided(reference):
            console.warn(
                f"{req.model} predicts near-uniform probabilities (mean top-1 {reference.max(-1).mean():.4f}); "
                "untrained weights? top-1 is noise there, so verification checks that the probabilities stay put instead"
            )

    validation = None
    if req.max_drop is not None:
        from .budget import check_overlap, check_resolution, load_validation

        validation = load_validation(req.validation, labels, spec, src)
        check_overlap(validation, calib, strict=req.strict)
        check_resolution(validation, req.max_drop)

    results = []
    common = {
        "source_model": {"spec": req.model, "kind": src.kind, "sha256": src.sha256},
        "preprocessing": spec,
        "labels": labels,
        "labels_from": labels_from,
        "host": host(),
        "tools": _tool_versions(),
    }
    variants = _variants(src, profiles, calib, images, reference)
    with tempfile.TemporaryDirectory(prefix="xception-edge-") as workdir:  # the run's exports, shared by every target
        exports = {key: Exports(s, Path(tempfile.mkdtemp(dir=workdir))) for key, (s, _, _) in variants.items()}
        for profile in profiles:
            interrupts.check()
            n_cal = req.num_calibration or profile.calibration_size
            target_calib = calib.take(n_cal) if calib is not None and profile.precision.needs_calibration else None
            check = (images, reference, images_from)
            key = variant_key(profile)
            source, table, scales = variants[key]
            run = {**common, "transforms": table, "transform_scales": scales}
            results.append(_convert_one(req, profile, source, target_calib, exports[key], run, check, validation))
    return results


def _variants(src: SourceModel, profiles: list[TargetProfile], calib, images, reference) -> dict:
    """The source model per transform list, float equivalence checked on the verification images."""
    if not any(p.quantization.transforms for p in profiles):
        return {(): (src, None, {})}
    from .transforms.variants import prepare

    return prepare(src, profiles, calib, images, reference)


def _build(
    profile, src: SourceModel, calib, stage: Path, exports: Exports, common: dict, check, **options
) -> tuple[Manifest, object, Verification | None]:
    """Convert into ``stage`` (``options``: backend-specific converter keywords); the manifest (not
    yet written), the opened artifact, the verification."""
    images, reference, images_from = check
    t0 = time.perf_counter()
    converted = converter_for(profile.backend)(src, profile, calib, stage, exports, **options)
    seconds = time.perf_counter() - t0
    (stage / "labels.txt").write_text("\n".join(common["labels"]) + "\n", encoding="utf-8")
    if calib is not None:
        (stage / "calibration.txt").write_text(calib.list_text(), encoding="utf-8")
    if common.get("transform_scales"):
        from .transforms.variants import write_scales

        write_scales(stage, common["transform_scales"])
    manifest = Manifest(
        target=profile.name,
        description=profile.description,
        hardware=profile.hardware,
        backend=profile.backend,
        format=profile.format,
        precision=profile.precision.value,
        threads=profile.threads,
        model_file=converted.model_file,
        input=converted.input,
        output=converted.output,
        source_model=common["source_model"],
        preprocessing=common["preprocessing"],
        labels=tuple(common["labels"]),
        labels_from=common["labels_from"],
        host=common["host"],
        tools={**common["tools"], **converted.tools},
        calibration=calib.summary() if calib is not None else None,
        conversion={"seconds": round(seconds, 2), **converted.details},
        profile=profile.to_dict(),
        transforms=common.get("transforms"),
        created=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    )
    runtime = open_artifact(stage, manifest=manifest)
    result = None
    if images is not None:
        result = verify(runtime, images, reference, profile.verify.min_agreement, images_from)
        _print_verification(profile.name, result)
    return manifest, runtime, result


def _check_verification(name: str, result: Verification | None) -> None:
    if result is None or result.passed:
        return
    if result.mode == "distribution":
        raise VerificationFailed(
            f"{name}: output probabilities moved by up to {result.max_abs_diff:.4f} on {result.images} "
            f"images (limit {result.max_abs_diff_limit:.4f} for an undecided source model); the artifact was not written"
        )
    raise VerificationFailed(
        f"{name}: top-1 agreement with the source model is {result.agreement:.1%} on "
        f"{result.images} images, below the floor {result.floor:.0%} (max |Δp| {result.max_abs_diff:.3f}); "
        "the artifact was not written"
    )


def _convert_one(req, profile, src: SourceModel, calib, exports: Exports, common, check, validation) -> TargetResult:
    t0 = time.perf_counter()
    final = child_dir(req.out, profile.name, f"{profile.source}: target name")
    console.info(f"[{profile.name}] converting: {profile.backend} {profile.precision.value}")
    try:
        with staged_dir(final, force=req.force) as stage:
            budget = None
            if validation is not None:
                from .budget import keep_within_budget

                def build(p, **options):
                    return _build(p, src, calib, stage, exports, common, check, **options)

                manifest, result, budget = keep_within_budget(
                    profile, req.max_drop, validation, src, calib, build, stage, exports
                )
            else:
                manifest, _, result = _build(profile, src, calib, stage, exports, common, check)
            _check_verification(profile.name, result)
            seconds = time.perf_counter() - t0
            manifest = dataclasses.replace(
                manifest,
                conversion={**manifest.conversion, "seconds": round(seconds, 2)},
                accuracy_budget=budget,
                verification=result,
                verification_skipped=None if result else "--no-verify",
            )
            files = write_manifest(stage, manifest).files
            size = sum(e["bytes"] for name, e in files.items() if name not in ("labels.txt", "calibration.txt"))
        return TargetResult(
            profile.name,
            profile.backend,
            profile.precision.value,
            str(final),
            size,
            seconds,
            manifest.to_dict()["verification"],
            float_layers=list(budget.float_layers) if budget else None,
            float_mac_share=budget.float_mac_share if budget else None,
            drop_pp=budget.drop_pp if budget else None,
        )
    except (XceptionEdgeError, OSError) as exc:
        if isinstance(exc, BadInput):
            raise
        if interrupts.interrupted():  # a framework turned the Ctrl-C into its own error: it is an interrupt
            raise KeyboardInterrupt from None
        message = str(exc) if isinstance(exc, XceptionEdgeError) else _os_failure(profile.name, exc)
        console.error(message)
        return TargetResult(
            profile.name, profile.backend, profile.precision.value, None, None, time.perf_counter() - t0, None, error=message
        )


def _os_failure(name: str, exc: OSError) -> str:
    """A failed write or read while converting one target (a full disk, most often): one line."""
    import errno

    where = f" writing {exc.filename}" if exc.filename else ""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"{name}: the disk is full{where}; free space and convert again (nothing was written)"
    return f"{name}: {exc.strerror or exc}{where}; nothing was written for this target"


def _print_verification(name: str, r: Verification) -> None:
    mark = "ok" if r.passed else "FAILED"
    strict = f" (strict {r.strict_agreement:.1%})" if r.strict_agreement != r.agreement else ""
    if r.mode == "distribution":
        strict += f" [undecided source: gated on max |Δp| ≤ {r.max_abs_diff_limit:.4f}]"
    if r.kernels:
        console.info(f"[{name}] verify runs {r.kernels}")
    console.info(
        f"[{name}] verify: top-1 agreement {r.agreement:.1%}{strict} on {r.images} images (floor {r.floor:.0%}), "
        f"max |Δp| {r.max_abs_diff:.4f}, mean |Δp| {r.mean_abs_diff:.5f} — {mark}"
    )
