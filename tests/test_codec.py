"""Canonical key encoding: equal keys give equal bytes; keys decode as first inserted."""

from __future__ import annotations

import enum
import math
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shmshare.objects.codec import decode_key, dumps, encode_key, loads


def cmp(key: object) -> bytes:
    data, n = encode_key(key)
    return data[:n]


def test_numeric_equality_is_one_key() -> None:
    """1, 1.0, True, 1+0j are one key; 0, 0.0, -0.0, False are one key."""
    assert cmp(1) == cmp(1.0) == cmp(True) == cmp(complex(1, 0))
    assert cmp(0) == cmp(0.0) == cmp(-0.0) == cmp(False)
    assert cmp(2) != cmp(2.5) and cmp(1) != cmp("1") and cmp(b"a") != cmp("a")
    assert cmp((1, "a")) == cmp((1.0, "a")) == cmp((True, "a"))
    assert cmp(frozenset({1, 2})) == cmp(frozenset({2.0, 1}))
    assert cmp(10**40) == cmp(float(10**40)) or float(10**40) != 10**40


def test_display_keeps_the_original_type() -> None:
    """A key decodes to the object first used, type included."""
    for key in [True, False, 1.0, -0.0, (1.0, "x"), complex(2, 0), frozenset({True})]:
        back = decode_key(encode_key(key)[0])
        assert back == key and type(back) is type(key)
        if isinstance(key, float):
            assert math.copysign(1, back) == math.copysign(1, key)


def test_nan_is_one_key() -> None:
    """Every NaN is the same key (documented difference from dict)."""
    assert cmp(float("nan")) == cmp(float("-nan"))
    assert math.isnan(decode_key(encode_key(float("nan"))[0]))


def test_unhashable_keys_raise_type_error() -> None:
    """Lists, dicts and sets (also nested in tuples) raise TypeError as in dict."""
    for key in [[1], {"a": 1}, {1}, (1, [2])]:
        with pytest.raises(TypeError, match="unhashable"):
            encode_key(key)


class Color(enum.Enum):
    RED = 1


def test_enum_members_decode_as_themselves() -> None:
    """An Enum member is a key of its own and iterates back as the member."""
    assert decode_key(encode_key(Color.RED)[0]) is Color.RED
    assert cmp(Color.RED) != cmp(1)
    assert cmp(Decimal("1.5")) == cmp(Decimal("1.5")) == cmp(1.5)
    assert cmp(Decimal(1)) == cmp(1)


def test_empty_and_surrogates() -> None:
    """'' and lone surrogates round-trip; '' differs from b''."""
    for key in ["", "\udc80x", b"", "\xff"]:
        assert decode_key(encode_key(key)[0]) == key
    assert cmp("") != cmp(b"")


scalars = st.one_of(st.text(max_size=20), st.binary(max_size=20), st.integers(),
                    st.floats(allow_nan=False), st.booleans(), st.none())
keys = st.recursive(scalars, lambda inner: st.one_of(
    st.tuples(inner, inner), st.frozensets(inner, max_size=3)), max_leaves=6)


@given(keys, keys)
def test_equal_iff_dict_equal(a: object, b: object) -> None:
    """Canonical bytes are equal exactly when the keys are equal as dict keys."""
    assert (cmp(a) == cmp(b)) == (a == b)


@given(keys)
def test_roundtrip(key: object) -> None:
    """decode(encode(k)) == k with the same type."""
    back = decode_key(encode_key(key)[0])
    assert back == key and type(back) is type(key)


def test_values_fall_back_to_cloudpickle() -> None:
    """Lambdas, closures and local classes pickle through cloudpickle."""
    n = 3

    class Local:
        x = 5

    f = loads(dumps(lambda x: x + n))
    assert f(1) == 4
    assert loads(dumps(Local)).x == 5


def test_unpicklable_value_raises_pickling_error() -> None:
    """A value neither pickle nor cloudpickle can handle raises the original error."""
    import threading

    with pytest.raises(TypeError, match="pickle"):
        dumps(threading.Lock())
