"""Evaluation of encoders on the deployed engines: extraction (the only caller of an engine), then pure
functions of arrays — exact FAISS kNN, retrieval metrics, linear probe, approximate-index benchmark —
and the run report.

Modules: ``extract`` (Engine protocol, cached extraction), ``knn``, ``retrieval``, ``linear_probe``,
``baselines`` (raw-pixel engine), ``suite`` (EvalConfig, evaluate_engine, compare_engines), ``index_bench``,
``report`` / ``plots`` (report.json, report.md, PNGs), ``compare`` (``python -m edge_encoder.evaluate.compare A B``).
evaluate/ imports neither train/ nor export/.
"""
