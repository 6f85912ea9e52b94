"""Caption model: clip feature sequence -> short caption (S2VT / soft-attention LSTM encoder-decoder).

Modules: :mod:`.vocab` (tokenizer + vocabulary), :mod:`.model` (CaptionArchitecture/CaptionConfig +
CaptionModel), :mod:`.decode` (greedy / beam search). Data, training, metrics and the streaming head are in
:mod:`vidseq.tasks.caption`. Importing this package is cheap; import the submodules you need.
"""

from __future__ import annotations
