"""The training engine shared by every head: ``fit`` / ``train_one_epoch`` / ``evaluate``, checkpoints, DDP.

Submodules (imported on use, so ``import vidseq.train`` stays cheap):
  * :mod:`vidseq.train.engine` -- TrainConfig, TrainTask, FitResult, fit, train_one_epoch, evaluate
  * :mod:`vidseq.train.checkpoint` -- save_checkpoint, load_checkpoint, load_model
  * :mod:`vidseq.train.distributed` -- torchrun/DDP helpers
"""

from __future__ import annotations
