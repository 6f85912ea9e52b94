"""Clip datasets and sequences: the dataset format (:mod:`.manifest`), importers for public benchmarks
(:mod:`.importers`), synthetic scenes (:mod:`.synth`) and trajectory windows (:mod:`.trajectories`).

Submodules are imported on demand (this package import is cheap)::

    from vidseq.sequences.manifest import load_dataset, Dataset, Clip
    from vidseq.sequences.synth import SynthConfig, generate_dataset
"""

from __future__ import annotations
