"""LSTM heads (Config + Module pairs) that consume feature sequences: anomaly, trajectory, caption."""
