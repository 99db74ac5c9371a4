"""The shared leaf of edge_encoder: what every stage needs and none owns.

Atomic writes, hashes and the run-directory lock (:mod:`edge_encoder.core.files`), the expected failures and their
exit codes (:mod:`edge_encoder.core.errors`), the image-input contract and its checks
(:mod:`edge_encoder.core.contract`), seeded subsets (:mod:`edge_encoder.core.subsets`), the one config-section validator
(:mod:`edge_encoder.core.config`). Modules here import the
standard library and NumPy only, never a stage (a test enforces it), so ``train/``, ``export/`` and
``evaluate/`` can all depend on them without depending on each other.
"""
