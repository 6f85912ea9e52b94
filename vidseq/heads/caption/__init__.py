"""Caption head: clip feature sequence -> short caption (S2VT / soft-attention LSTM encoder-decoder).

Modules: :mod:`.vocab` (tokenizer + vocabulary), :mod:`.model` (CaptionConfig + CaptionModel),
:mod:`.decode` (greedy / beam search), :mod:`.metrics` (BLEU, ROUGE-L, CIDEr, METEOR via pycocoevalcap),
:mod:`.task` (``vidseq train caption`` / ``vidseq eval caption``).
Importing this package is cheap; import the submodules you need.
"""

from __future__ import annotations
