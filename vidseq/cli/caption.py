"""``vidseq caption VIDEO --model CKPT [--window-s N] [--beam N] [--out PATH]``: describe a video in words.

Prints the caption of the whole video, or with ``--window-s N`` one line per N-second window
(``[start-end s] caption``). ``--out`` writes the same as JSON lines (``captions.jsonl`` inside a
folder, or the ``.jsonl`` file given), atomically.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("caption", help="caption a video with a trained caption model",
                              description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("video", metavar="VIDEO", help="video file or image folder")
    p.add_argument("--model", type=Path, required=True, help="caption checkpoint (best.pt of vidseq train caption)")
    p.add_argument("--window-s", type=float, default=None, metavar="N",
                   help="caption every N seconds instead of the whole video")
    p.add_argument("--beam", type=int, default=None, metavar="N", help="beam width (1 = greedy; default: checkpoint's)")
    p.add_argument("--max-len", type=int, default=None, metavar="N", help="most words per caption")
    p.add_argument("--device", default=None, help="backbone device (default: the checkpoint's)")
    p.add_argument("--out", type=Path, default=None,
                   help="write JSON lines: a .jsonl file, or a folder that gets captions.jsonl")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from vidseq.errors import ConfigError, SourceNotFoundError
    from vidseq.tasks.caption.captioner import Captioner, write_captions_jsonl

    if args.beam is not None and args.beam < 1:
        raise ConfigError(f"--beam must be >= 1, got {args.beam}")
    if args.max_len is not None and args.max_len < 1:
        raise ConfigError(f"--max-len must be >= 1, got {args.max_len}")
    if args.window_s is not None and args.window_s <= 0:
        raise ConfigError(f"--window-s must be > 0, got {args.window_s}")
    if not Path(args.video).exists():
        raise SourceNotFoundError(f"video not found: {args.video}")
    captioner = Captioner.from_checkpoint(args.model, beam_size=args.beam, max_len=args.max_len, device=args.device)
    captions = []
    for c in captioner.iter_video(args.video, args.window_s):
        captions.append(c)
        if args.window_s is None:
            print(c.caption)
        else:
            print(f"[{c.start_s:7.1f}-{c.end_s:7.1f} s] {c.caption}", flush=True)
    if args.out is not None:
        out = args.out if args.out.suffix == ".jsonl" else args.out / "captions.jsonl"
        write_captions_jsonl(out, args.video, captions)
    return 0
