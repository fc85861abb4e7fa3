"""Issue #14: `evaluate` here vs `evaluate --executor ray` on a local two-node Ray cluster (1 CPU
per node, as the tests start it: tests/raycluster.py), on the demo's val split (600 images) with
every built-in target; then the measured per-shard overhead and per-image cost as a model of
`evaluate` time against node count for ImageNet-val size (50,000 images x 10 artifacts + Keras).

A benchmark, not a test: it prints the figures and writes bench/ray_scaling.json.

    .venv/bin/xception-edge convert --model ~/.cache/xception-edge/demo-v1/model.keras --target all \\
        --calibration ~/.cache/xception-edge/demo-v1/data/train --out /tmp/xe-demo/artifacts   # or `make demo`
    .venv/bin/python bench/ray_scaling.py --artifacts /tmp/xe-demo/artifacts     # ~6 min on 2 cores

On one 2-core machine the two nodes share the same two cores (and each runtime still uses its
profile's threads), so Ray cannot be faster here than a local run: the side-by-side shows its
overhead; the model shows where more machines pay.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # tests/raycluster.py: the same cluster the tests start

DEMO = Path(os.environ.get("XCEPTION_EDGE_CACHE", Path.home() / ".cache" / "xception-edge")) / "demo-v1"
IMAGENET = 50_000
IMAGENET_BYTES = 6.4e9  # ImageNet's validation JPEGs, ~128 KB each
ACCURACY = ("images", "top1", "top5", "agreement", "flipped", "flips_per_class", "per_class", "drop_ci_pp", "mcnemar_p")


def cpu() -> dict:
    text = Path("/proc/cpuinfo").read_text()
    name = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), "?")
    flags = set(next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []))
    return {
        "model": name,
        "cores": os.cpu_count(),
        "avx512_vnni": "avx512_vnni" in flags,
        "amx": any(f.startswith("amx") for f in flags),
    }


def timed_evaluate(label: str, **kw) -> tuple[float, dict]:
    import xception_edge as xe

    t0 = time.perf_counter()
    report = xe.evaluate(**kw)
    wall = time.perf_counter() - t0
    print(f"{label}: {wall:.1f} s", file=sys.stderr)
    return wall, report.to_dict()


def accuracy(rep: dict) -> dict:
    return {r["name"]: {k: r.get(k) for k in ACCURACY} for r in [rep["reference"], *rep["artifacts"]]}


def fit(shards: list[dict]) -> tuple[float, float]:
    """Per-shard overhead o and per-image cost c from warm shards: seconds = o + c * images."""
    n = np.array([s["count"] for s in shards], float)
    t = np.array([s["seconds"] for s in shards], float)
    c, o = np.polyfit(n, t, 1)
    return float(o), float(c)


def noop(x):
    return x


def task_overhead(address: str, n: int = 200) -> float:
    """Seconds per trivial Ray task, dispatched by the toolkit's map_tasks and waited for one by one."""
    from xception_edge.scale.executor import map_tasks

    map_tasks(noop, list(range(8)), executor="ray", ray_address=address)  # workers up
    t0 = time.perf_counter()
    map_tasks(noop, list(range(n)), executor="ray", ray_address=address)
    return (time.perf_counter() - t0) / n


def driver_per_shard(names: list[str], size: int, classes: int) -> float:
    """The driver's own work per finished shard: checkpointing it (npz, atomic) and densifying it."""
    from xception_edge.scale.shardstore import ShardStore, dense

    rng = np.random.default_rng(0)
    pred = {
        "idx": np.arange(size, dtype=np.int64),
        "top": rng.integers(0, classes, (size, 5)).astype(np.int32),
        "p": rng.random((size, 5), dtype=np.float32),
    }
    result = {"index": 0, "start": 0, "count": size, "model_sha256": "x", "node_id": "n", "ip": "i", "seconds": 1.0}
    result |= {"load_seconds": 0.0, "failed": {}, "predictions": {name: pred for name in names}}
    with tempfile.TemporaryDirectory() as d:
        store = ShardStore(Path(d), resume=False, names=names, num_classes=classes)
        t0 = time.perf_counter()
        for _ in range(20):
            store.save("k" * 64, result)
            [dense(pred, classes) for _ in names]
        return (time.perf_counter() - t0) / 20


def model(per_image: float, o: float, load: float, serial: float, h: float, size: int, nodes: int) -> float:
    """evaluate seconds for ImageNet-val on ``nodes`` nodes: the driver's serial part, one model
    load per node, then the shards dealt over the nodes (each o + size * per_image), unless the
    driver's per-shard handling h is the bottleneck."""
    shards = math.ceil(IMAGENET / size)
    per_shard = o + size * per_image
    return serial + load + max(math.ceil(shards / nodes) * per_shard, shards * h)


def full_size_per_image() -> float | None:
    """Seconds per 299 px image through Keras and all 10 targets: the p50s of bench/results.json
    (batch 1, 2 threads, this host)."""
    path = HERE / "results.json"
    if not path.is_file():
        return None
    r = json.loads(path.read_text())
    return (r["keras_fp32_p50_ms"] + sum(t["p50_ms"] for t in r["targets"] if t.get("p50_ms"))) / 1000


def ray_install_mb() -> dict:
    import importlib.metadata as md

    out = {}
    for dist in (
        "ray",
        "msgpack",
        "jsonschema",
        "jsonschema-specifications",
        "referencing",
        "rpds-py",
        "attrs",
        "PyYAML",
        "filelock",
    ):
        try:
            files = md.distribution(dist).files or []
        except md.PackageNotFoundError:
            continue
        out[dist] = round(sum((f.size or 0) for f in files) / 1e6, 1)
    return out


def cli_wall(args, report: Path, *extra: str) -> tuple[float, dict]:
    """Wall time of `xception-edge evaluate` in a fresh process, as a user runs it, and its report."""
    cmd = [str(Path(sys.executable).with_name("xception-edge")), "-q", "evaluate", "--model", str(args.model)]
    cmd += ["--artifacts", str(args.artifacts), "--data", str(args.data), "--report", str(report)]
    cmd += ["--runs", str(args.runs), "--warmup", str(args.warmup), *extra]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    print(f"{' '.join(extra) or 'local'}: {wall:.1f} s", file=sys.stderr)
    return wall, json.loads((report / "report.json").read_text())


def side_by_side(args, cluster, work: Path) -> dict:
    """Each run a fresh `xception-edge evaluate` process (TensorFlow imported, models loaded, Ray
    workers started anew), local and Ray alternated, twice."""
    ray = ("--executor", "ray", "--ray-address", cluster.address, "--shard-size", str(args.shard_size))
    walls: dict[str, list[float]] = {"local": [], "ray": []}
    reports = {}
    for i in range(2):
        for kind, extra in (("local", ()), ("ray", ray)):
            wall, reports[kind] = cli_wall(args, work / f"{kind}{i}", *extra)
            walls[kind].append(wall)
    assert accuracy(reports["local"]) == accuracy(reports["ray"]), "Ray's accuracy differs from the local run's"
    ray_timing = reports["ray"]["timing"]["ray"]
    return {"walls": walls, "nodes": ray_timing["nodes"], "ray_phase_s": ray_timing["wall_seconds"]}


def measure(args, cluster, work: Path) -> dict:
    sbs = side_by_side(args, cluster, work)
    common = dict(model=str(args.model), artifacts=str(args.artifacts), data=str(args.data), runs=args.runs, warmup=args.warmup)
    ray = dict(executor="ray", ray_address=cluster.address)
    size, half = args.shard_size, args.shard_size // 2
    cold_s, cold = timed_evaluate(f"ray, shards of {size}, cold", report=work / "cold", shard_size=size, **common, **ray)
    warm_s, warm = timed_evaluate(f"ray, shards of {size}, warm", report=work / "warm", shard_size=size, **common, **ray)
    small_s, small = timed_evaluate(f"ray, shards of {half}, warm", report=work / "small", shard_size=half, **common, **ray)
    assert accuracy(cold) == accuracy(warm) == accuracy(small), "Ray's accuracy differs between shard sizes"
    from xception_edge.scale.shardstore import SHARDS

    shards = []  # each warm shard's seconds and images, from its checkpoint
    for folder in (work / "warm", work / "small"):
        for p in sorted((folder / SHARDS).glob("*.npz")):
            with np.load(p) as z:
                shards.append(json.loads(str(z["meta"][()])))
    o, c = fit(shards)
    names = ["keras-fp32", *(r["name"] for r in cold["artifacts"])]
    cold_ray, warm_ray = cold["timing"]["ray"], warm["timing"]["ray"]
    return {
        "images": cold["data"]["images"],
        "models": len(names),
        "side_by_side": sbs,
        "in_process_seconds": {"ray_cold": cold_s, "ray_warm": warm_s, f"ray_warm_shards_of_{half}": small_s},
        "ray_phase_seconds": {"cold": cold_ray["wall_seconds"], "warm": warm_ray["wall_seconds"]},
        "nodes_cold": cold_ray["nodes"],
        "nodes_warm": warm_ray["nodes"],
        "load_seconds_per_node": max(n["load_seconds"] for n in cold_ray["nodes"]),
        "driver_serial_seconds": warm_s - warm_ray["wall_seconds"],
        "per_shard_overhead_s": o,
        "per_image_s": c,
        "ray_task_overhead_s": task_overhead(cluster.address),
        "sha256_mb_per_s": hash_mb_per_s(),
        "driver_per_shard_s": driver_per_shard(names, 256, len(cold["labels"])),
        "accuracy_identical": True,
    }


def hash_mb_per_s() -> float:
    """sha256 throughput of one core here (the driver hashes every image once, `data.sha256`)."""
    import hashlib

    block = os.urandom(64 << 20)
    t0 = time.perf_counter()
    hashlib.sha256(block).hexdigest()
    return 64 * 1.048576 / (time.perf_counter() - t0)


def scaling(m: dict, full: float | None, runs: int) -> list[dict]:
    """ImageNet-val time against node count. Serial, on the driver: hashing every image (6.4 GB
    at the measured sha256 rate, disk reads not counted) and the driver's fixed part (measured on
    the demo: Keras load, latency timing of 11 models, scoring, report; at full size plus the
    latency runs at 299 px and an assumed 30 s more to load the models). Per node: loading the
    models once (measured on the demo; 60 s assumed at full size). Then the shards."""
    hashing = IMAGENET_BYTES / 1e6 / m["sha256_mb_per_s"]
    fixed = m["driver_serial_seconds"]
    cases = [("demo 80 px", 256, m["per_image_s"], fixed, m["load_seconds_per_node"])]
    if full is not None:
        full_fixed = fixed + runs * full + 30
        cases += [("full 299 px", 256, full, full_fixed, 60.0), ("full 299 px", 64, full, full_fixed, 60.0)]
    rows = []
    for label, size, per_image, fixed_s, load in cases:
        serial = hashing + fixed_s
        one = model(per_image, m["per_shard_overhead_s"], load, serial, m["driver_per_shard_s"], size, 1)
        for n in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512):
            t = model(per_image, m["per_shard_overhead_s"], load, serial, m["driver_per_shard_s"], size, n)
            rows.append(
                {"size": label, "shard": size, "nodes": n, "hours": t / 3600, "speedup": one / t, "efficiency": one / t / n}
            )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--artifacts", type=Path, default=Path("demo-artifacts"))
    ap.add_argument("--model", type=Path, default=DEMO / "model.keras")
    ap.add_argument("--data", type=Path, default=DEMO / "data" / "val")
    ap.add_argument("--shard-size", type=int, default=64)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--json", type=Path, default=HERE / "ray_scaling.json")
    args = ap.parse_args()
    if not (args.artifacts.is_dir() and args.model.is_file() and args.data.is_dir()):
        sys.exit(f"need the demo's model, val split and artifacts (run `make demo`, or pass --artifacts/--model/--data): {args}")
    from raycluster import start_cluster

    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="xe-ray-bench-") as tmp:
        cluster = start_cluster(Path(tmp) / "cluster", workers=1, hide=False)
        try:
            m = measure(args, cluster, Path(tmp))
        finally:
            import ray

            if ray.is_initialized():
                ray.shutdown()
            cluster.stop()
    result = {"cpu": cpu(), "shard_size": args.shard_size, "measured": m, "ray_install_mb": ray_install_mb()}
    result["load_average_1min"] = {"before": load_before, "after": os.getloadavg()[0]}  # other work on the machine
    result["full_size_per_image_s"] = full_size_per_image()
    result["scaling"] = scaling(m, result["full_size_per_image_s"], args.runs + args.warmup)
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    report(result)


def report(r: dict) -> None:
    m, c = r["measured"], r["cpu"]
    sbs = m["side_by_side"]
    print(
        f"CPU: {c['model']}, {c['cores']} cores (avx512_vnni: {c['avx512_vnni']}, amx: {c['amx']}); 2 Ray nodes x 1 CPU share them"
    )
    print(f"evaluate, demo val ({m['images']} images x {m['models']} models), fresh processes, twice each:")
    for k, v in sbs["walls"].items():
        print(f"  {k:6s} " + "  ".join(f"{x:6.1f} s" for x in v))
    print(
        f"  (the last Ray run: its Ray phase {sbs['ray_phase_s']:.1f} s, the driver's own part {m['driver_serial_seconds']:.1f} s)"
    )
    for k, v in m["in_process_seconds"].items():
        print(f"  in one driver process, {k:24s} {v:6.1f} s")
    for n in m["nodes_cold"]:
        print(
            f"  cold node {n['ip']}: {n['shards']} shards, {n['images']} images, {n['images_per_s']:.1f} images/s ({n['load_seconds']:.1f} s loading)"
        )
    for n in m["nodes_warm"]:
        print(f"  warm node {n['ip']}: {n['shards']} shards, {n['images']} images, {n['images_per_s']:.1f} images/s")
    print(
        f"per shard overhead {1000 * m['per_shard_overhead_s']:.0f} ms; per image (all models) {1000 * m['per_image_s']:.1f} ms; "
        f"empty Ray task {1000 * m['ray_task_overhead_s']:.1f} ms; driver per shard {1000 * m['driver_per_shard_s']:.1f} ms; "
        f"model load per node {m['load_seconds_per_node']:.1f} s"
    )
    print(f"Ray install (MB, this venv): {r['ray_install_mb']}; 1-min load average before/after: {r['load_average_1min']}")
    full = r["full_size_per_image_s"]
    print(
        f"sha256 {m['sha256_mb_per_s']:.0f} MB/s; full size (bench/results.json p50s, 2 threads): {full} s per image, all models"
    )
    print(f"ImageNet-val ({IMAGENET} images x {m['models']} models):")
    print("  size         shard  nodes   hours  speedup  efficiency")
    for row in r["scaling"]:
        print(
            f"  {row['size']:12s} {row['shard']:5d} {row['nodes']:6d} {row['hours']:7.2f} {row['speedup']:8.1f} {row['efficiency']:10.0%}"
        )


if __name__ == "__main__":
    main()
