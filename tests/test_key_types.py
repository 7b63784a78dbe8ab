"""Keys beyond the builtins: equal in Python means one key, in every process; else TypeError."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import subprocess
import sys
import textwrap
import uuid
from collections import namedtuple
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from helpers import JOIN_TIMEOUT, START_METHODS
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from shmshare import SharedDict
from shmshare.objects.codec import decode_key, encode_key


def cmp(key: object) -> bytes:
    data, n = encode_key(key)
    return data[:n]


def back(key: object) -> object:
    return decode_key(encode_key(key)[0])


class Num(enum.IntEnum):
    ONE = 1


class Word(str, enum.Enum):
    HI = "hi"


class Perm(enum.Flag):
    R = 1
    W = 2


@dataclasses.dataclass(frozen=True)
class Point:
    x: float
    y: float
    label: str = dataclasses.field(default="", compare=False)


Pair = namedtuple("Pair", "a b")


def test_equal_keys_are_one_key() -> None:
    """Keys that are == and hash alike give the same canonical bytes."""
    groups = [
        [1, 1.0, True, Num.ONE, np.int64(1), np.uint8(1), np.float32(1), np.bool_(True),
         Fraction(1), Decimal(1), Decimal("1.000")],
        [0.5, np.float16(0.5), np.float64(0.5), Fraction(1, 2), Decimal("0.5")],
        [Fraction(1, 10), Decimal("0.1")],
        ["hi", Word.HI, np.str_("hi")],
        [(1, 2), Pair(1, 2), (np.int32(1), 2.0)],
        [Point(1, 2), Point(1.0, 2.0, label="other")],
        [dt.datetime(2020, 1, 1, 12, tzinfo=dt.timezone.utc),
         dt.datetime(2020, 1, 1, 13, tzinfo=dt.timezone(dt.timedelta(hours=1)))],
        [dt.timedelta(hours=1), dt.timedelta(minutes=60)],
        [float("nan"), np.float32("nan"), Decimal("nan")],
    ]
    for group in groups:
        for key in group:
            assert hash(key) == hash(group[0]) or key != key, key
            assert cmp(key) == cmp(group[0]), (key, group[0])
    firsts = [cmp(g[0]) for g in groups]
    assert len(set(firsts)) == len(firsts)


def test_unequal_keys_stay_apart() -> None:
    """Keys Python calls different get different bytes."""
    keys = [Fraction(1, 10), 0.1, Perm.R, Perm.R | Perm.W, Point(1, 2), Point(2, 1), (1, 2),
            dt.datetime(2020, 1, 1), dt.date(2020, 1, 1),
            dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc),
            uuid.UUID(int=1), int, str, 1, "1"]
    assert len({cmp(k) for k in keys}) == len(keys)


def test_keys_iterate_back_as_inserted() -> None:
    """The display suffix gives back the first-inserted key, type included."""
    for key in [Num.ONE, Word.HI, Perm.R | Perm.W, Point(1, 2, "a"), Pair(1, 2), np.int64(3),
                np.str_("x"), Fraction(1, 3), Decimal("0.1"), int, uuid.UUID(int=7),
                dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc)]:
        got = back(key)
        assert got == key and type(got) is type(key)


class Plain:
    pass


class CaseInsensitive(str):
    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and self.lower() == other.lower()

    def __hash__(self) -> int:
        return hash(self.lower())


class ByValue:
    def __init__(self, v: int) -> None:
        self.v = v

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ByValue) and other.v == self.v

    def __hash__(self) -> int:
        return hash(self.v)


@dataclasses.dataclass(frozen=True)
class OwnEq:
    x: int

    def __eq__(self, other: object) -> bool:
        return isinstance(other, OwnEq) and abs(self.x - other.x) < 2

    def __hash__(self) -> int:
        return 0


def test_keys_whose_equality_is_unknown_are_refused() -> None:
    """Identity-equal objects, own __eq__, local classes, odd numpy scalars: TypeError, why."""
    def local() -> type:
        class Local:
            pass
        return Local

    cases = [(Plain(), "compares by identity"), (CaseInsensitive("a"), "redefines == or hash"),
             (ByValue(1), "defines its own =="), (OwnEq(1), "defines its own =="),
             (local(), "defined inside a function"),
             (np.datetime64("2020-01-01"), "use key.item()"),
             (Decimal("1e99999"), "digits")]
    for key, why in cases:
        with pytest.raises(TypeError, match=why) as info:
            encode_key(key)
        assert "docs/concepts/keys.md" in str(info.value)
    with pytest.raises(TypeError, match="unhashable"):
        encode_key(Point([1], 2))  # type: ignore[arg-type]


_SCRIPT = textwrap.dedent('''
    import dataclasses, enum, multiprocessing as mp, sys
    import numpy as np
    from shmshare import SharedDict

    class Color(enum.Enum):
        RED = 1
        GREEN = 2

    @dataclasses.dataclass(frozen=True)
    class Point:
        x: int
        y: int

    class Plain:
        pass

    def child(d):
        assert d[Color.RED] == "red", dict(d)
        assert d[Point(1, 2)] == "point"
        assert d.get(1) == "one" and d.get(np.int64(1)) == "one"
        d[Color.GREEN] = "green"
        d[Point(3, 4)] = "point2"
        try:
            d[Plain()] = 1
        except TypeError:
            d["refused"] = True

    if __name__ == "__main__":
        d = SharedDict()
        d[Color.RED] = "red"
        d[Point(1, 2)] = "point"
        d[np.int64(1)] = "one"
        p = mp.get_context(sys.argv[1]).Process(target=child, args=(d,))
        p.start()
        p.join(60)
        assert p.exitcode == 0, p.exitcode
        assert d[Color.GREEN] == "green" and d[Point(3, 4)] == "point2" and d["refused"]
        assert len(d) == 6, list(d)
        keys = list(d)
        assert keys[3] is Color.GREEN and type(keys[4]) is Point, keys
        d.detach()
        print("ok")
''')


@pytest.mark.parametrize("method", START_METHODS)
def test_main_script_keys_are_one_key_in_children(method: str, tmp_path: Path) -> None:
    """Enum/dataclass keys of a real __main__ script, numpy scalars: one key in every child."""
    script = tmp_path / "main_script.py"
    script.write_text(_SCRIPT)
    proc = subprocess.run([sys.executable, str(script), method], capture_output=True, text=True,
                          timeout=JOIN_TIMEOUT, cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


def test_shared_dict_numpy_key_found_by_int() -> None:
    """d[np.int64(1)] = v is found by d.get(1) (and the reverse)."""
    with SharedDict() as d:
        d[np.int64(1)] = "v"
        d[2] = "w"
        assert d.get(1) == "v" and d[np.int32(2)] == "w" and len(d) == 2


class Bits(enum.IntFlag):
    A = 1
    B = 2


def _as(kind: str, n: Fraction) -> object:
    """``n`` as a key of another numeric type, when that type holds it exactly."""
    if kind == "decimal":
        exact = n.denominator in (1, 2, 4, 5, 8, 10)  # a Decimal quotient holds these exactly
        return Decimal(n.numerator) / Decimal(n.denominator) if exact else n
    if kind == "float" and float(n) == n:
        return float(n)
    if n.denominator == 1 and -2**62 < n.numerator < 2**62:
        if kind == "numpy":
            return np.int64(n.numerator)
        if kind == "flag" and 0 <= n.numerator <= 3:
            return Bits(n.numerator)
    return n


@settings(max_examples=50, deadline=None)
@given(st.fractions(max_denominator=10), st.fractions(max_denominator=10),
       st.sampled_from(["decimal", "float", "numpy", "flag", "fraction"]),
       st.sampled_from(["decimal", "float", "numpy", "flag", "fraction"]))
def test_numeric_keys_equal_iff_python_equal(a: Fraction, b: Fraction, ka: str, kb: str) -> None:
    """Across Fraction, Decimal, float, numpy and IntFlag: one key exactly when ==."""
    x, y = _as(ka, a), _as(kb, b)
    try:
        equal = bool(x == y)
    except TypeError:  # Decimal == numpy integer raises in Python itself
        assume(False)
    assert (cmp(x) == cmp(y)) == equal, (x, y)
    assert (cmp((x, "t")) == cmp((y, "t"))) == equal
