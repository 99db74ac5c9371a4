import numpy as np
import pytest
from edge_encoder.evaluate.baselines import RawPixelEngine
from edge_encoder.evaluate.knn import configure_threads, knn_accuracy

from tests.evaluate.conftest import ListSource


def test_raw_pixels_formula(images):
    x_train = images[0]
    eng = RawPixelEngine(x_train)
    emb = eng.embed(x_train[:3])
    flat = x_train.reshape(len(x_train), -1).astype(np.float64)
    want = flat[:3] - flat.mean(axis=0)
    np.testing.assert_allclose(emb, want / np.linalg.norm(want, axis=1, keepdims=True), atol=1e-6)
    per_image = RawPixelEngine(x_train, centering="image").embed(x_train[:1])
    centred = flat[:1] - flat[:1].mean()
    np.testing.assert_allclose(per_image, centred / np.linalg.norm(centred), atol=1e-6)
    assert eng.cache_token != RawPixelEngine(x_train, centering="image").cache_token
    assert eng.cache_token != RawPixelEngine(x_train[:-1]).cache_token


def test_raw_pixels_rejects_bad_input(images):
    eng = RawPixelEngine(images[0])
    with pytest.raises(ValueError, match=r"\(N, 8, 8, 3\)"):
        eng.embed(np.zeros((2, 4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        eng.embed(images[0].astype(np.float32))
    with pytest.raises(ValueError, match="centering"):
        RawPixelEngine(images[0], centering="none")


def test_raw_pixels_from_a_source_equal_the_array(images):
    x_train = images[0]
    array, source = RawPixelEngine(x_train), ListSource(x_train)
    streamed = RawPixelEngine(source)
    assert source.reads == len(x_train)  # one pass: train_mean needs the mean image
    np.testing.assert_array_equal(streamed.mean, array.mean)  # exact integer sums: bit for bit
    assert streamed.cache_token == array.cache_token and streamed.input_spec == array.input_spec
    np.testing.assert_array_equal(streamed.embed(x_train[:5]), array.embed(x_train[:5]))
    per_image_source = ListSource(x_train)
    per_image = RawPixelEngine(per_image_source, centering="image")
    assert per_image_source.reads == 1  # per-image centring reads only item 0 (the input size)
    np.testing.assert_array_equal(per_image.embed(x_train[:5]),
                                  RawPixelEngine(x_train, centering="image").embed(x_train[:5]))
    with pytest.raises(ValueError, match="non-empty image sequence"):
        RawPixelEngine(ListSource([]))
    with pytest.raises(ValueError, match=r"image 4 has shape"):
        RawPixelEngine(ListSource(list(x_train[:4]) + [x_train[4][:4]]))


@pytest.mark.slow
def test_raw_pixel_knn_on_cifar10_dev(cifar10_dev):
    configure_threads(None)
    eng = RawPixelEngine(cifar10_dev["x_train"])
    acc = knn_accuracy(eng.embed(cifar10_dev["x_train"]), cifar10_dev["y_train"],
                       eng.embed(cifar10_dev["x_test"]), cifar10_dev["y_test"], k=20, temperature=0.07)
    # Train-mean centring gives 0.3975 (the data README's 0.407 uses per-image centring + majority vote).
    assert acc["top1"] == pytest.approx(0.3975, abs=0.002)
