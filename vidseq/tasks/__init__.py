"""One package per task: data prep, fit/train, evaluate, tune, and the streaming head it adds to
``process``/``monitor`` (:mod:`vidseq.tasks.stream` is their contract).

* :mod:`.anomaly`: ``vidseq train/eval/tune anomaly``, ``vidseq score``, the anomaly head.
* :mod:`.trajectory`: ``vidseq train/eval trajectory``, the forecaster and the trajectory head.
* :mod:`.caption`: ``vidseq train/eval caption``, ``vidseq caption``, the caption head.

A task never imports another task (``tests/test_layers.py``). Tasks are found by name through
:data:`vidseq.registry.TASKS` and their heads through :data:`vidseq.registry.STREAM_HEADS`.
"""

from __future__ import annotations
