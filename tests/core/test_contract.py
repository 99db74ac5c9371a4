"""``core.contract.Preprocess``: the one form the preprocessing travels in, and its stored dict form."""

from __future__ import annotations

import numpy as np
import pytest
from edge_encoder.core.contract import Preprocess, as_preprocess, normalization_of

STORED = {"image_size": 16, "mean": [0.491, 0.482, 0.447], "std": [0.247, 0.243, 0.261]}


def test_any_sequence_of_reals_gives_one_value() -> None:
    """Lists, tuples and NumPy floats (channel statistics) make equal, hashable contracts of Python floats."""
    from_list = Preprocess(16, [0.5, 0.5, 0.5], [0.25, 0.25, 0.25])
    from_numpy = Preprocess(np.int64(16), np.full(3, 0.5, np.float32), tuple(np.float64(0.25) for _ in range(3)))
    assert from_list == from_numpy and hash(from_list) == hash(from_numpy)
    assert type(from_numpy.image_size) is int and all(type(v) is float for v in from_numpy.mean + from_numpy.std)
    assert from_list.mean == (0.5, 0.5, 0.5)


def test_the_stored_form_round_trips_unchanged() -> None:
    """``to_dict`` is the checkpoint's ``preprocess`` entry as written before the type existed."""
    pre = Preprocess.from_dict(STORED)
    assert pre.to_dict() == STORED and Preprocess.from_dict(pre.to_dict()) == pre
    assert as_preprocess(STORED) == pre and as_preprocess(pre) is pre
    assert normalization_of(pre) == normalization_of({"mean": STORED["mean"], "std": STORED["std"]})


@pytest.mark.parametrize("values, message", [
    ({**STORED, "std": [0.2, 0.0, 0.2]}, "run/ckpt.pt: key 'preprocess.std' must be a list of 3 finite numbers > 0"),
    ({**STORED, "mean": [0.5, 0.5]}, "run/ckpt.pt: key 'preprocess.mean' must be a list of 3 finite numbers"),
    ({**STORED, "mean": ["0.5", "0.5", "0.5"]}, "run/ckpt.pt: key 'preprocess.mean' must be"),
    ({**STORED, "mean": [0.5, float("nan"), 0.5]}, "run/ckpt.pt: key 'preprocess.mean' must be"),
    ({**STORED, "image_size": True}, "run/ckpt.pt: key 'preprocess.image_size' must be a positive integer"),
    ({**STORED, "image_size": 0}, "run/ckpt.pt: key 'preprocess.image_size' must be a positive integer"),
    ({"image_size": 16}, "run/ckpt.pt: key 'preprocess' must hold exactly ['image_size', 'mean', 'std']; "
                         "missing keys ['mean', 'std']"),
    ({**STORED, "scale": 1.0}, "run/ckpt.pt: key 'preprocess' must hold exactly ['image_size', 'mean', 'std']; "
                               "unknown keys ['scale']"),
    ([16, [0.5] * 3, [0.25] * 3], "run/ckpt.pt: key 'preprocess' must be an object {image_size, mean, std}, got list"),
])
def test_a_malformed_stored_form_names_the_file_and_the_key(values: object, message: str) -> None:
    with pytest.raises(ValueError) as err:
        Preprocess.from_dict(values, source="run/ckpt.pt")
    assert str(err.value).startswith(message), str(err.value)


def test_direct_construction_is_checked_too() -> None:
    with pytest.raises(ValueError, match=r"preprocess std must be a list of 3 finite numbers > 0 .*, got \[1, 1, -1\]"):
        Preprocess(16, [0.5] * 3, [1, 1, -1])
    with pytest.raises(ValueError, match="preprocess image_size must be a positive integer"):
        Preprocess(16.0, [0.5] * 3, [0.25] * 3)  # type: ignore[arg-type]


def test_a_mean_std_declaration_needs_both() -> None:
    """A foreign ONNX file's ``{"mean", "std"}`` has no image size; each missing or bad key is named."""
    with pytest.raises(ValueError, match="m.onnx: missing key 'std'"):
        normalization_of({"mean": [0.5] * 3}, source="m.onnx")
    with pytest.raises(ValueError, match="m.onnx: key 'std' must be a list of 3 finite numbers > 0"):
        normalization_of({"mean": [0.5] * 3, "std": [0.0] * 3}, source="m.onnx")
