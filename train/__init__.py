"""Offline training: fine-tune a bi-encoder or a cross-encoder from pair files or a BEIR folder.

Built on sentence-transformers' trainers. Inputs are validated before any model loads
(:mod:`twostage.train.pairs`, :mod:`twostage.train.beir`); every run writes a checkpoint that
``SentenceTransformer``/``CrossEncoder`` and Hugging Face ``from_pretrained`` load, and a
``training_report.json``. The reranker run also writes ``fusion.json``
(:mod:`twostage.train.fusion`), the dense/cross-encoder score fusion the server applies.
"""
