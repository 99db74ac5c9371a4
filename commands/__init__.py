"""The subcommands of the ``edge-encoder`` console script (``cli.py`` registers them), one module each.

Like ``pipeline.py`` these modules compose the stages (``train/``, ``export/``, ``evaluate/``, ``imagedata/``); the
stages never import them. ``errors`` ends every command the same way (exit codes, one-line errors) and
``engine_args`` turns the ENGINE argument of ``evaluate``/``embed`` (a bundle, or any ONNX encoder file with a
declared input contract) into engines of the project's contract.
"""
