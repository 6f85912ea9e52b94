"""``vidseq feedback RUN_DIR --event ID --label false_alarm|confirmed``: a verdict on one alarm.

Appends a feedback line to ``RUN_DIR/events.jsonl``; a false alarm's frames are learnt as normal at the
next update of the stream's normality (a running ``vidseq monitor`` on that folder picks it up; see
:mod:`vidseq.tasks.anomaly.feedback`, which the web dashboard calls too).

Example::

    vidseq feedback runs/cam --event 3 --label false_alarm
"""

from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "feedback", help="mark an alarm as a false alarm (learnt as normal) or confirmed",
        description="Record a verdict on one event of a monitor/process run folder (appended to events.jsonl). "
                    "False alarms are learnt as normal footage at the next normality update.",
        epilog="example:\n  vidseq feedback runs/cam --event 3 --label false_alarm",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="output folder of vidseq monitor (or process)")
    p.add_argument("--event", required=True, metavar="ID", help="event id (events.jsonl / events.json); its number alone works too (3 for cam-0003)")
    p.add_argument("--label", required=True, choices=("false_alarm", "confirmed"))
    p.add_argument("--note", default=None, help="free text kept with the verdict")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from vidseq.tasks.anomaly.feedback import mark_event

    rec = mark_event(args.run_dir, args.event, args.label, args.note)
    print(json.dumps(rec))
    return 0
