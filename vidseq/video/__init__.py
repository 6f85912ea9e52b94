"""Frames in and out: sources (files, image folders, webcams, RTSP/HTTP streams), frame-folder listing, and
sinks (H.264 MP4, CSV, JSON Lines). Uses OpenCV/PyAV and the core only.

    from vidseq.video.sources import open_source
    from vidseq.video.sinks import VideoSink, CsvSink, JsonlSink
"""

from __future__ import annotations
