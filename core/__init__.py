"""The shared leaf of edge_encoder: what every stage needs and none owns.

Atomic writes and hashes (:mod:`edge_encoder.core.files`), the image-input contract and its checks
(:mod:`edge_encoder.core.contract`), seeded subsets (:mod:`edge_encoder.core.subsets`). Modules here import the
standard library and NumPy only, never a stage (a test enforces it), so ``train/``, ``export/`` and
``evaluate/`` can all depend on them without depending on each other.
"""
