"""core.config: one validator, one error style, for any frozen config dataclass."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from edge_encoder.core.config import check_types, config_from_dict, require


@dataclass(frozen=True)
class Toy:
    count: int = 1
    rate: float = 0.5
    flag: bool = False
    name: str = "a"
    threads: int | None = None
    mode: str | bool = "auto"
    ranks: tuple[int, ...] = (1, 5)
    pairs: tuple[tuple[int, float], ...] = ((200, 0.1),)
    names: list[str] | None = None

    def __post_init__(self) -> None:
        check_types("toy", self)
        require(self.count >= 1, "toy", "count", "must be >= 1", self.count)


def test_values_are_coerced_to_their_annotation() -> None:
    toy = config_from_dict("toy", Toy, {"rate": 2, "ranks": [1, 2], "pairs": [[20, 1]], "names": ["x"], "mode": False})
    assert toy.rate == 2.0 and isinstance(toy.rate, float)
    assert toy.ranks == (1, 2) and toy.pairs == ((20, 1.0),) and toy.names == ["x"] and toy.mode is False
    assert config_from_dict("toy", Toy, {}) == Toy()


@pytest.mark.parametrize("values, message", [
    ({"count": True}, "config key 'toy.count': expected int, got bool (True)"),
    ({"count": 2.0}, "config key 'toy.count': expected int, got float (2.0)"),
    ({"rate": "0.1"}, "config key 'toy.rate': expected float, got str ('0.1')"),
    ({"flag": 1}, "config key 'toy.flag': expected bool, got int (1)"),
    ({"threads": "4"}, "config key 'toy.threads': expected int or null, got str ('4')"),
    ({"mode": 1}, "config key 'toy.mode': expected str or bool, got int (1)"),
    ({"ranks": 5}, "config key 'toy.ranks': expected a list of int, got int (5)"),
    ({"pairs": [200, 0.1]}, "config key 'toy.pairs': expected a list of [int, float], got list ([200, 0.1])"),
    ({"pairs": [[200]]}, "config key 'toy.pairs': expected a list of [int, float]"),
    ({"count": 0}, "config key 'toy.count': must be >= 1, got 0"),
    ({"cuont": 2}, "config key 'toy.cuont': unknown key; did you mean 'count'? (known keys: count, flag, mode,"),
])
def test_every_mistake_is_one_value_error_naming_the_key(values: dict, message: str) -> None:
    with pytest.raises(ValueError) as err:
        config_from_dict("toy", Toy, values)
    assert str(err.value).startswith(message), str(err.value)


def test_a_section_that_is_not_a_table() -> None:
    with pytest.raises(ValueError, match=r"config section \[toy\] must be a table, got list"):
        config_from_dict("toy", Toy, [1])  # type: ignore[arg-type]


def test_direct_construction_is_checked_alike() -> None:
    with pytest.raises(ValueError, match="config key 'toy.flag': expected bool, got str"):
        Toy(flag="yes")  # type: ignore[arg-type]
