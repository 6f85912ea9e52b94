"""vidseq: video sequences -> features -> stacked-LSTM heads (trajectory, anomaly, caption).

Importing the package is cheap: torch, ultralytics and OpenCV are imported by the modules that use them.
"""

from __future__ import annotations

__version__ = "0.1.0"
