"""Fuzz suite (issue 17): a corpus generated here -- truncated and bit-flipped videos, wrong extensions, empty and
huge-dimension images, NaN/inf in feature files and annotation CSVs, malformed YAML/JSON, checkpoints that are not
ours or are tampered -- run through the CLI in-process.

Every case must end with exit 0, or exit 2 and exactly one ``vidseq CMD: error: ...`` line: never a traceback, a
hang (each case has a time limit) or an output that looks complete but is not. Hypothesis draws the offsets,
bytes and values; example counts are small so the whole file stays within about a minute on 2 cores.
"""

from __future__ import annotations

import contextlib
import io
import json
import signal
import struct
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_video
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vidseq.cli import main

pytestmark = pytest.mark.timeout(300)
CASE_LIMIT_S = 60  # one case; generous for a loaded 2-core machine, far below a hang
FUZZ = settings(deadline=None, derandomize=True, suppress_health_check=list(HealthCheck), database=None)
FAST = ["--set", "backbone_weights=yolov8n.yaml", "--set", "tracker.imgsz=128", "--set", "trajectory.model=null"]
SCORE_SET = ["--set", "model.motion.width=0"]  # native resolution: tiny clips stay cheap


@contextlib.contextmanager
def time_limit(seconds: int) -> Iterator[None]:
    def fire(*_: object) -> None:
        raise TimeoutError(f"case ran longer than {seconds} s")

    old = signal.signal(signal.SIGALRM, fire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def run(args: list[str]) -> tuple[int, str]:
    """``vidseq ARGS`` in-process: (exit code, stderr). A traceback or a hang fails the test here."""
    err = io.StringIO()
    with time_limit(CASE_LIMIT_S), contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(["-q", *args])
        except SystemExit as exc:  # argparse
            code = int(exc.code or 0)
    return code, err.getvalue()


def check(args: list[str], *, leaves_nothing: Callable[[], list[Path]] | None = None) -> int:
    """Run a case and check the contract; ``leaves_nothing`` lists outputs that must not exist after exit 2."""
    code, err = run(args)
    assert code in (0, 2), (args, code, err)
    assert "Traceback" not in err, err
    if code == 2:
        lines = [ln for ln in err.splitlines() if ln.startswith("vidseq")]
        assert len(lines) == 1 and ": error: " in lines[0], (args, err)
        if leaves_nothing is not None:
            assert leaves_nothing() == [], (args, err)
    return code


def no_complete_result(out: Path) -> list[Path]:
    """process: after a failure, no summary.json under ``out`` may say complete unless all its files agree."""
    bad = []
    for s in out.glob("*/summary.json"):
        doc = json.loads(s.read_text())
        if doc.get("status") == "complete":
            bad.append(s)
    return bad


# -- the corpus -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    import cv2

    d = tmp_path_factory.mktemp("corpus")
    c = {"avi": write_video(d / "clip.avi", n_frames=20, size=(96, 64))}
    c["mp4"] = write_video(d / "clip.mp4", n_frames=20, size=(96, 64), fourcc="mp4v")
    frames = d / "frames"
    frames.mkdir()
    for i in range(6):
        cv2.imwrite(str(frames / f"{i:03d}.png"), np.full((48, 64, 3), 30 * i, np.uint8))
    c["frames"] = frames
    # an anomaly checkpoint of ours (same recipe as tests/cli/test_score.py)
    from vidseq.features.motion import MotionConfig
    from vidseq.models.anomaly.fit import fit_anomaly_model
    from vidseq.models.anomaly.model import AnomalyConfig
    from vidseq.tasks.anomaly.features import extract_clip_features
    from vidseq.train.checkpoint import save_checkpoint

    cfg = AnomalyConfig(streams=("speed", "objects"), motion=MotionConfig(width=0))
    clips = [extract_clip_features(write_video(d / f"n{i}.avi", n_frames=14), cfg) for i in range(2)]
    model, cal, info = fit_anomaly_model(cfg, clips[:1], clips[1:])
    c["ckpt"] = save_checkpoint(d / "model.pt", model=model, model_name="anomaly_fusion",
                                model_config=model.model_config(),
                                extra={"calibration": cal.to_dict(), "fit": info})
    assert main(["-q", "data", "synth", str(d / "ds"), "--clips", "2", "--seed", "0", "--set", "frames=20",
                 "--set", "frames_max=20"]) == 0
    c["ds"] = d / "ds"
    return c


def mutate(data: bytes, cut: int | None, flips: list[tuple[int, int]]) -> bytes:
    buf = bytearray(data if cut is None else data[:cut])
    for pos, xor in flips:
        if buf:
            buf[pos % len(buf)] ^= xor or 1
    return bytes(buf)


flips_st = st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(1, 255)), max_size=6)


# -- videos: truncations at many offsets, flipped bytes in headers and payloads ---------------------

@given(kind=st.sampled_from(["avi", "mp4"]), cut=st.one_of(st.none(), st.integers(0, 40_000)),
       flips=flips_st, header=st.booleans())
@settings(FUZZ, max_examples=14)
def test_score_on_damaged_videos(corpus: dict[str, Path], tmp_path_factory, kind: str, cut: int | None,
                                 flips: list[tuple[int, int]], header: bool) -> None:
    d = tmp_path_factory.mktemp("sv")
    data = corpus[kind].read_bytes()
    if header:  # aim the flips at the container header
        flips = [(p % 256, x) for p, x in flips]
    video = d / f"v.{kind}"
    video.write_bytes(mutate(data, cut, flips))
    out = d / "o"
    check(["score", str(video), "--unsupervised", "--out", str(out), *SCORE_SET],
          leaves_nothing=lambda: sorted(out.glob("v_*")) if out.exists() else [])


@given(cut=st.one_of(st.none(), st.integers(0, 40_000)), flips=flips_st)
@settings(FUZZ, max_examples=10)
def test_extract_on_damaged_videos(corpus: dict[str, Path], tmp_path_factory, cut: int | None,
                                   flips: list[tuple[int, int]]) -> None:
    d = tmp_path_factory.mktemp("ev")
    video = d / "v.avi"
    video.write_bytes(mutate(corpus["avi"].read_bytes(), cut, flips))
    out = d / "o"
    code = check(["extract", str(video), "--out", str(out), "--backbone", "resnet18", "--no-pretrained",
                  "--imgsz", "32", "--feature-dim", "8", "--no-progress"],
                 leaves_nothing=lambda: sorted(out.glob("*.npz")) if out.exists() else [])
    if code == 0:
        with np.load(out / "v.npz") as z:
            assert np.isfinite(z["features"]).all() and len(z["features"]) > 0


@pytest.mark.parametrize("case", ["half", "header_flip", "payload_flip", "empty", "text_as_avi", "png_as_mp4"])
def test_process_on_damaged_videos(case: str, corpus: dict[str, Path], tmp_path: Path) -> None:
    data = corpus["avi"].read_bytes()
    name, payload = "v.avi", data
    if case == "half":
        payload = data[: len(data) // 2]
    elif case == "header_flip":
        payload = mutate(data, None, [(i, 0x5A) for i in range(8, 200, 7)])
    elif case == "payload_flip":
        payload = mutate(data, None, [(i, 0xFF) for i in range(len(data) // 3, len(data), 97)])
    elif case == "empty":
        payload = b""
    elif case == "text_as_avi":
        payload = b"this is not a video\n" * 50
    elif case == "png_as_mp4":
        name, payload = "v.mp4", (corpus["frames"] / "000.png").read_bytes()
    (tmp_path / name).write_bytes(payload)
    out = tmp_path / "o"
    code = check(["process", str(tmp_path / name), "--out", str(out), "--no-progress", *FAST],
                 leaves_nothing=lambda: no_complete_result(out))
    if code == 0:  # a complete result is consistent with its files
        s = json.loads((out / "v" / "summary.json").read_text())
        rows = (out / "v" / "frames.csv").read_text().strip().splitlines()[1:]
        assert s["status"] == "complete" and len(rows) == s["frames"] > 0


# -- images: wrong extensions, zero-length, huge and zero dimensions ----------------------------------

def png_with_size(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` (valid CRCs) with a tiny, inconsistent payload."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("case", ["zero_length", "huge", "zero_dim", "avi_as_png", "garbage_png", "one_pixel"])
@pytest.mark.parametrize("command", ["score", "extract"])
def test_image_folders(case: str, command: str, corpus: dict[str, Path], tmp_path: Path) -> None:
    import shutil

    folder = tmp_path / "frames"
    shutil.copytree(corpus["frames"], folder)
    bad = folder / "002.png"
    bad.write_bytes({"zero_length": b"", "huge": png_with_size(100_000, 100_000), "zero_dim": png_with_size(0, 0),
                     "avi_as_png": corpus["avi"].read_bytes()[:5000], "garbage_png": b"\x89PNG" + b"\xff" * 300,
                     "one_pixel": b""}[case])
    if case == "one_pixel":
        import cv2

        cv2.imwrite(str(bad), np.zeros((1, 1, 3), np.uint8))
    out = tmp_path / "o"
    if command == "score":
        check(["score", str(folder), "--unsupervised", "--out", str(out), *SCORE_SET],
              leaves_nothing=lambda: sorted(out.glob("frames_*")) if out.exists() else [])
    else:
        check(["extract", str(folder), "--out", str(out), "--backbone", "resnet18", "--no-pretrained", "--imgsz",
               "32", "--feature-dim", "8", "--no-progress"],
              leaves_nothing=lambda: sorted(out.glob("*.npz")) if out.exists() else [])


# -- feature files and annotation CSVs with NaN/inf ----------------------------------------------------

@pytest.mark.parametrize("poison", ["nan", "inf", "truncated_zip", "not_npz"])
def test_tampered_feature_cache_is_recomputed(poison: str, corpus: dict[str, Path], tmp_path: Path) -> None:
    args = ["extract", str(corpus["avi"]), "--out", str(tmp_path), "--backbone", "resnet18", "--no-pretrained",
            "--imgsz", "32", "--feature-dim", "8", "--no-progress"]
    assert check(args) == 0
    target = tmp_path / "clip.npz"
    if poison in ("nan", "inf"):
        with np.load(target) as z:
            parts = {k: z[k] for k in z.files}
        parts["features"] = parts["features"].copy()
        parts["features"][3, 2] = np.nan if poison == "nan" else np.inf
        np.savez(target, **parts)
    elif poison == "truncated_zip":
        target.write_bytes(target.read_bytes()[:200])
    else:
        target.write_bytes(b"hello")
    assert check(args) == 0
    with np.load(target) as z:
        assert np.isfinite(z["features"]).all()


CELL = st.sampled_from(["nan", "inf", "-inf", "", "-1", "1e308", "abc", "1,2", "\"", "0x10", "-0", "99999999999"])


@given(row=st.integers(1, 30), col=st.integers(0, 7), value=CELL)
@settings(FUZZ, max_examples=30)
def test_annotation_csv_values(corpus: dict[str, Path], tmp_path_factory, row: int, col: int, value: str) -> None:
    import shutil

    ds = tmp_path_factory.mktemp("ds") / "ds"
    shutil.copytree(corpus["ds"], ds)
    csv_path = min((ds / "tracks").glob("*.csv"))
    lines = csv_path.read_text().splitlines()
    r = lines[row % len(lines)].split(",")
    r[col % len(r)] = value
    lines[row % len(lines)] = ",".join(r)
    csv_path.write_text("\n".join(lines) + "\n")
    check(["data", "validate", str(ds)])


# -- malformed YAML and JSON -------------------------------------------------------------------------

YAML_TEXT = st.one_of(
    st.text(alphabet=st.sampled_from(list("abc:-[]{}'\"#&*!|>%@ \n\t0123456789.,")), max_size=80),
    st.sampled_from(["tracker: [1, 2", "a: b: c", "- 1\n- 2", "stride: .nan", "stride: !!python/object:os.system x",
                     "\x00\x01", "tracker:\n  conf: 2\n", "video: maybe", "anomaly: 3", "? [a]\n: 1",
                     "stride: 1e400", "max_frames: -0", "&a [*a]"]),
)


@given(text=YAML_TEXT, command=st.sampled_from(["process", "extract", "monitor", "score"]))
@settings(FUZZ, max_examples=40)
def test_malformed_config_files(tmp_path_factory, text: str, command: str) -> None:
    d = tmp_path_factory.mktemp("cfg")
    cfg = d / "c.yaml"
    cfg.write_text(text, encoding="utf-8", errors="surrogateescape")
    missing = str(d / "missing.avi")  # a valid config still ends at the missing video: nothing heavy runs
    out = d / "o"
    args = {"process": ["process", missing, "--out", str(out), "--config", str(cfg)],
            "extract": ["extract", missing, "--out", str(out), "--config", str(cfg)],
            "monitor": ["monitor", "--source", missing, "--out", str(out), "--config", str(cfg)],
            "score": ["score", missing, "--unsupervised", "--out", str(out), "--config", str(cfg)]}[command]
    assert check(args) == 2
    assert not out.exists()


@given(text=YAML_TEXT)
@settings(FUZZ, max_examples=20)
def test_malformed_dataset_yaml(corpus: dict[str, Path], tmp_path_factory, text: str) -> None:
    import shutil

    ds = tmp_path_factory.mktemp("dy") / "ds"
    shutil.copytree(corpus["ds"], ds)
    (ds / "dataset.yaml").write_text(text, encoding="utf-8", errors="surrogateescape")
    check(["data", "validate", str(ds)])


@pytest.mark.parametrize("text", ["", "{", "[]", "null", "{\"status\": \"running\"}", "\xff\xfe",
                                  "{\"status\": \"complete\"}"])
def test_malformed_summary_json_is_rerun(text: str, corpus: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "o"
    (out / "clip").mkdir(parents=True)
    (out / "clip" / "summary.json").write_text(text, encoding="utf-8", errors="surrogateescape")
    args = ["process", str(corpus["avi"]), "--out", str(out), "--no-progress", "--max-frames", "3", *FAST]
    if "complete" in text:  # claims to be a complete result of unknown settings: kept unless --force
        assert check(args) == 2
        assert (out / "clip" / "summary.json").read_text() == text
        args.append("--force")
    assert check(args) == 0
    s = json.loads((out / "clip" / "summary.json").read_text())
    assert s["status"] == "complete" and s["frames"] == 3


# -- checkpoints that are not ours, or tampered ------------------------------------------------------

class Evil:
    def __reduce__(self):
        return (Path.touch, (Path(EVIL_MARKER),))


EVIL_MARKER = "/tmp/vidseq-fuzz-evil-marker"


def not_ours(kind: str, d: Path) -> Path:
    p = d / f"{kind}.pt"
    if kind == "empty":
        p.write_bytes(b"")
    elif kind == "random":
        p.write_bytes(np.random.default_rng(0).bytes(4096))
    elif kind == "plain_dict":
        torch.save({"hello": torch.zeros(3)}, p)
    elif kind == "tensor":
        torch.save(torch.zeros(3), p)
    elif kind == "pickle_code":
        torch.save({"model": Evil()}, p)
    elif kind == "zip":
        import zipfile

        with zipfile.ZipFile(p, "w") as z:
            z.writestr("a.txt", "not a checkpoint")
    elif kind == "json":
        p.write_text("{\"model\": 1}")
    return p


@pytest.mark.parametrize("kind", ["empty", "random", "plain_dict", "tensor", "pickle_code", "zip", "json"])
def test_checkpoints_not_ours(kind: str, corpus: dict[str, Path], tmp_path: Path) -> None:
    Path(EVIL_MARKER).unlink(missing_ok=True)
    ckpt = not_ours(kind, tmp_path)
    out = tmp_path / "o"
    assert check(["score", str(corpus["avi"]), "--model", str(ckpt), "--out", str(out)],
                 leaves_nothing=lambda: sorted(out.glob("clip_*")) if out.exists() else []) == 2
    assert check(["caption", str(corpus["avi"]), "--model", str(ckpt)]) == 2
    assert check(["eval", "trajectory", "--model", str(ckpt), "--data", str(corpus["ds"])]) == 2
    assert not Path(EVIL_MARKER).exists()  # weights_only loading never ran the pickle's code


@given(cut=st.one_of(st.none(), st.integers(0, 200_000)), flips=flips_st)
@settings(FUZZ, max_examples=15)
def test_tampered_checkpoints(corpus: dict[str, Path], tmp_path_factory, cut: int | None,
                              flips: list[tuple[int, int]]) -> None:
    d = tmp_path_factory.mktemp("ck")
    ckpt = d / "model.pt"
    ckpt.write_bytes(mutate(corpus["ckpt"].read_bytes(), cut, flips))
    out = d / "o"
    code = check(["score", str(corpus["avi"]), "--model", str(ckpt), "--out", str(out)],
                 leaves_nothing=lambda: sorted(out.glob("clip_*")) if out.exists() else [])
    if code == 0:
        doc = json.loads((out / "clip_events.json").read_text())
        assert doc["frames"] == 20 and np.isfinite(doc["threshold"])
