import numpy as np
import pytest
from edge_encoder.evaluate.baselines import RawPixelEngine
from edge_encoder.evaluate.knn import knn_accuracy
from edge_encoder.evaluate.suite import (
    EvalConfig,
    compare_engines,
    eval_config_from_dict,
    evaluate_engine,
)

from tests.evaluate.conftest import ListSource, ProjectionEngine, make_projection_model

CONFIG = EvalConfig(knn_k=5, extra_knn=((10, 0.1),), linear_probe=True, num_threads=1)


def _scalars(metrics):
    return {k: v for k, v in metrics.items() if k not in ("evaluate_s", "search_s", "linear_probe_s", "cache_hit")}


def test_same_engine_twice_gives_identical_numbers_and_a_cache_hit(engine, images, tmp_path):
    first = evaluate_engine(engine, *images, config=CONFIG, dataset_id="toy", cache_dir=tmp_path)
    calls = engine.calls
    second = evaluate_engine(engine, *images, config=CONFIG, dataset_id="toy", cache_dir=tmp_path)
    assert engine.calls == calls, "second evaluation must not run the engine"
    assert not first.metrics["cache_hit"] and second.metrics["cache_hit"]
    assert _scalars(first.metrics) == _scalars(second.metrics)


def test_metrics_are_consistent_with_the_pure_functions(engine, images, tmp_path):
    ev = evaluate_engine(engine, *images, config=CONFIG, dataset_id="toy", cache_dir=None)
    m = ev.metrics
    x_train, y_train, x_test, y_test = images
    assert m["knn_top1"] == knn_accuracy(ev.train_embeddings, y_train, ev.test_embeddings, y_test, k=5)["top1"]
    for key in ("knn_top1", "knn_top5", "linear_top1", "linear_top5", "recall_at_1", "recall_at_10", "map_at_r",
                "knn_k10_t0.1_top1"):
        assert 0.0 <= m[key] <= 1.0, key
    assert m["knn_top1"] > 0.9  # the toy classes are well separated even in a random projection
    assert m["dim"] == 16 and m["embed_images_per_s"] > 0
    assert np.asarray(m["confusion_matrix"]).sum() == len(y_test)
    assert ev.neighbor_ids.shape == (len(y_test), CONFIG.agreement_k)


def test_compare_engines_deltas_and_agreement(tmp_path, images):
    ref_engine = ProjectionEngine(make_projection_model(tmp_path / "a.npy", seed=0), name="pytorch_fp32")
    other_engine = ProjectionEngine(make_projection_model(tmp_path / "b.npy", seed=5), name="onnx_fp32")
    cfg = EvalConfig(knn_k=5, extra_knn=(), linear_probe=False, num_threads=1)
    ref = evaluate_engine(ref_engine, *images, config=cfg, dataset_id="toy", cache_dir=None)
    same = evaluate_engine(ref_engine, *images, config=cfg, dataset_id="toy", cache_dir=None, reference=ref)
    assert same.metrics["neighbor_agreement_at_10"] == 1.0
    assert same.metrics["reference_cosine_min"] == pytest.approx(1.0)
    other = evaluate_engine(other_engine, *images, config=cfg, dataset_id="toy", cache_dir=None,
                            reference=ref.test_embeddings)
    assert 0.0 <= other.metrics["test_neighbor_agreement_at_10"] < 1.0
    raw = evaluate_engine(RawPixelEngine(images[0]), *images, config=cfg, dataset_id="toy", cache_dir=None)
    table = compare_engines({"pytorch_fp32": ref, "onnx_fp32": other, "raw_pixels": raw},
                            reference="pytorch_fp32", kinds={"raw_pixels": "baseline"})
    assert [t["kind"] for t in table.values()] == ["reference", "engine", "baseline"]
    assert table["onnx_fp32"]["delta_knn_top1"] == pytest.approx(other.metrics["knn_top1"] - ref.metrics["knn_top1"])
    assert table["onnx_fp32"]["delta_linear_top1"] is None  # probe disabled
    assert "delta_knn_top1" not in table["pytorch_fp32"]
    assert 0.0 <= table["raw_pixels"]["neighbor_agreement_at_10"] <= 1.0
    with pytest.raises(ValueError, match="reference 'nope'"):
        compare_engines({"a": ref}, reference="nope")


def test_k_larger_than_bank_is_reported(engine, images):
    with pytest.raises(ValueError, match="larger than the bank"):
        evaluate_engine(engine, *images, config=EvalConfig(knn_k=500, num_threads=1), dataset_id="t", cache_dir=None)


def test_extra_knn_larger_than_bank_is_skipped(engine, images):
    cfg = EvalConfig(knn_k=5, extra_knn=((500, 0.1),), linear_probe=False, num_threads=1)
    ev = evaluate_engine(engine, *images, config=cfg, dataset_id="t", cache_dir=None)
    assert ev.metrics["knn_k500_t0.1_top1"] is None and ev.metrics["knn_top1"] > 0


def test_labels_of_wrong_length(engine, images):
    x_train, y_train, x_test, y_test = images
    with pytest.raises(ValueError, match="test labels has 31 entries"):
        evaluate_engine(engine, x_train, y_train, x_test, y_test[:-1], config=CONFIG, dataset_id="t", cache_dir=None)


def test_config_from_dict():
    cfg = eval_config_from_dict({"knn_k": 10, "knn_temperature": 1, "extra_knn": [[200, 0.1]],
                                 "retrieval_ks": [1, 2], "linear_probe": False, "num_threads": None})
    assert cfg.knn_temperature == 1.0 and cfg.extra_knn == ((200, 0.1),) and cfg.retrieval_ks == (1, 2)
    assert eval_config_from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match=r"config key 'evaluate.knn_kk': unknown key; did you mean 'knn_k'"):
        eval_config_from_dict({"knn_kk": 3})
    with pytest.raises(ValueError, match=r"config key 'evaluate.knn_k': expected int, got str"):
        eval_config_from_dict({"knn_k": "20"})
    with pytest.raises(ValueError, match=r"config key 'evaluate.linear_probe': expected bool, got int"):
        eval_config_from_dict({"linear_probe": 1})
    with pytest.raises(ValueError, match=r"config key 'evaluate.extra_knn': expected a list of \[int, float\]"):
        eval_config_from_dict({"extra_knn": [200, 0.1]})
    with pytest.raises(ValueError, match=r"config key 'evaluate.knn_temperature': must lie in \[0.01, 10.0\]"):
        eval_config_from_dict({"knn_temperature": 0})


def test_sources_give_the_metrics_of_their_arrays(engine, images, tmp_path):
    x_train, y_train, x_test, y_test = images
    on_arrays = evaluate_engine(engine, *images, config=CONFIG, dataset_id="toy", cache_dir=None)
    on_sources = evaluate_engine(engine, ListSource(x_train), y_train, ListSource(x_test), y_test, config=CONFIG,
                                 dataset_id="toy", cache_dir=tmp_path)
    timings = ("embed_images_per_s", "threads")
    assert {k: v for k, v in _scalars(on_sources.metrics).items() if k not in timings} == \
        {k: v for k, v in _scalars(on_arrays.metrics).items() if k not in timings}
    np.testing.assert_array_equal(on_sources.train_embeddings, on_arrays.train_embeddings)
    np.testing.assert_array_equal(on_sources.neighbor_ids, on_arrays.neighbor_ids)
    again = evaluate_engine(engine, ListSource(x_train), y_train, ListSource(x_test), y_test, config=CONFIG,
                            dataset_id="toy", cache_dir=tmp_path)
    assert again.metrics["cache_hit"] and not on_sources.metrics["cache_hit"]
    with pytest.raises(ValueError, match="train labels"):
        evaluate_engine(engine, ListSource(x_train), y_train[:-1], ListSource(x_test), y_test, config=CONFIG,
                        dataset_id="toy", cache_dir=None)


def test_the_confusion_matrix_has_the_dataset_class_count(engine, images):
    # issue 18, point 5: every place that counts classes agrees with the dataset's class_names
    config = EvalConfig(knn_k=5, extra_knn=(), linear_probe=False, num_threads=1)
    default = evaluate_engine(engine, *images, config=config, dataset_id="toy", cache_dir=None)
    assert np.asarray(default.metrics["confusion_matrix"]).shape == (4, 4)  # largest label + 1
    six = evaluate_engine(engine, *images, config=config, dataset_id="toy", cache_dir=None, num_classes=6)
    cm = np.asarray(six.metrics["confusion_matrix"])
    assert cm.shape == (6, 6) and cm[:4, :4].tolist() == default.metrics["confusion_matrix"] and cm[4:].sum() == 0
    with pytest.raises(ValueError, match="num_classes=3 but the labels go up to 3"):
        evaluate_engine(engine, *images, config=config, dataset_id="toy", cache_dir=None, num_classes=3)
