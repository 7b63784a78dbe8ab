"""Canonical encodings of the keys that are not plain ``str``/``int``/``bytes``...

:mod:`.codec` encodes the builtin key types itself and hands every other key
here.  Each branch below encodes exactly what the type's ``==`` compares, so
that two keys Python calls equal (and that hash alike) give equal bytes in
every process, whatever its start method: a class is named by module and
qualified name, with ``__mp_main__`` (the main script re-run in a spawn or
forkserver child) read as ``__main__``.  A key whose ``==`` is unknown here
is refused with a TypeError that says why, never encoded some other way:
another encoding (its pickle, say) would split keys that Python calls equal.
"""

from __future__ import annotations

import sys
from typing import Any, NoReturn

from .codec import _DOUBLE, _FLOAT, _OBJ, _RATIO, _canonical, _int, _tagged

__all__ = ["canonical_other"]

_BASES = (str, int, float, complex, bytes, tuple, frozenset)
_SCALARS = (bool, int, float, complex, str, bytes)  # what numpy's .item() gives for numbers
_DIGITS_MAX = 4300  # as int(str) does by default: a Decimal('1e999999999') key is refused


def canonical_other(key: Any) -> bytes:
    """The canonical bytes of ``key``, a key that is not of an exact builtin key type."""
    hash(key)  # unhashable keys raise TypeError here, as with dict
    t = type(key)
    eq: Any = t.__eq__  # compared by identity with the eq of the types it may derive from
    np = sys.modules.get("numpy")
    if np is not None and isinstance(key, np.generic):
        return _numpy(key)
    for base in _BASES:
        if isinstance(key, base):
            _same_equality(t, base)
            return _canonical(_as_base(key, base))[0]
    numbers = _module_types(("fractions", "Fraction"), ("decimal", "Decimal"))
    for cls in numbers:
        if isinstance(key, cls):
            _same_equality(t, cls)
            return _real(key)
    enum = sys.modules.get("enum")
    if enum is not None and isinstance(key, enum.Enum):
        if eq is not object.__eq__ or t.__hash__ is not enum.Enum.__hash__:
            _refuse(t, "an Enum that redefines == or hash()")
        return _object(t, ("member", key._name_))
    if isinstance(key, type):
        if eq is not type.__eq__ or "<locals>" in key.__qualname__:
            _refuse(t, "a class defined inside a function, which no other process can name"
                    if "<locals>" in key.__qualname__ else "a metaclass that redefines ==")
        return _object(key, ("class",))
    fields = _dataclass_fields(key)
    if fields is not None:
        return _object(t, tuple(getattr(key, f) for f in fields))
    value = _stdlib_value(key)
    if value is not None:
        return _object(t, value)
    if eq is object.__eq__:
        _refuse(t, "compares by identity, and an object's identity cannot be shared "
                "between processes")
    _refuse(t, "defines its own ==, which shmshare cannot apply in other processes")


def _refuse(t: type, why: str) -> NoReturn:
    raise TypeError(
        f"a {t.__module__}.{t.__qualname__} cannot be a shared key: it {why}. Use a key "
        "that every process compares alike: str, bytes, numbers, None, tuples and "
        "frozensets of keys, Enum members, frozen dataclasses of keys (see "
        "docs/concepts/keys.md)")


def _same_equality(t: type, base: type) -> None:
    eq: Any = t.__eq__
    if eq is not base.__eq__ or t.__hash__ is not base.__hash__:
        _refuse(t, f"is a {base.__name__} subclass that redefines == or hash(); use "
                f"{base.__name__}(key) as the key")


def _as_base(key: Any, base: type) -> Any:
    """``key`` as an instance of exactly ``base``, by base's own methods (a subclass
    may redefine ``__str__``, ``__iter__``... but not the value ``==`` compares)."""
    if base is str:
        return str.__str__(key)
    if base is int:
        return int.__int__(key)
    if base is float:
        return float.__float__(key)
    if base is complex:
        return complex(float.__float__(key.real), float.__float__(key.imag))
    if base is bytes:
        return b"" + key
    if base is tuple:
        return tuple.__getitem__(key, slice(None))
    return frozenset.copy(key)


def _numpy(key: Any) -> bytes:
    item = key.item()  # the Python scalar of the same value (int, float, bool, str...)
    nan = item != item and key != key  # every NaN is one key, as float NaNs are
    if type(item) in _SCALARS and (nan or (item == key and hash(item) == hash(key))):
        return _canonical(item)[0]
    _refuse(type(key), f"is not equal to its Python value {item!r} (or hashes "
                   "differently); use key.item() or another value as the key")


def _real(key: Any) -> bytes:
    """Fraction and Decimal: an int, a float's IEEE bytes, or the exact ratio."""
    if hasattr(key, "is_finite"):  # Decimal
        if not key.is_finite():
            return _canonical(float(key))[0]  # NaN and infinities equal the float ones
        if abs(key.adjusted()) > _DIGITS_MAX:
            _refuse(type(key), f"has over {_DIGITS_MAX} digits")
    n, d = key.as_integer_ratio()
    if d == 1:
        return _int(n)
    try:
        f = n / d
    except OverflowError:
        f = None
    if f is not None and f.as_integer_ratio() == (n, d):
        return _tagged(_FLOAT, _DOUBLE.pack(f))
    return _tagged(_RATIO, _int(n) + _int(d))


def _object(cls: type, value: tuple[Any, ...]) -> bytes:
    """A value of class ``cls``: keys equal when their class and ``value`` are."""
    module = "__main__" if cls.__module__ == "__mp_main__" else cls.__module__
    return _tagged(_OBJ, _canonical((module, cls.__qualname__, value))[0])


def _dataclass_fields(key: Any) -> list[str] | None:
    """The fields the ``__eq__`` that ``@dataclass`` made compares, or None."""
    dataclasses = sys.modules.get("dataclasses")
    if dataclasses is None or not dataclasses.is_dataclass(key):
        return None
    owner = next(c for c in type(key).__mro__ if "__eq__" in c.__dict__)
    eq = owner.__dict__["__eq__"]
    code = getattr(eq, "__code__", None)
    params = owner.__dict__.get("__dataclass_params__")
    if params is None or not params.eq or code is None or code.co_filename != "<string>":
        return None  # an __eq__ of the user's own: refused below, as any other
    return [f.name for f in dataclasses.fields(owner) if f.compare]


def _stdlib_value(key: Any) -> tuple[Any, ...] | None:
    """What ``==`` compares for datetime's types and UUID (exact types only)."""
    t = type(key)
    dt = sys.modules.get("datetime")
    if dt is not None and t in (dt.datetime, dt.time, dt.date, dt.timedelta):
        if t is dt.timedelta:
            return (key.days, key.seconds, key.microseconds)
        if t is dt.date:
            return (key.year, key.month, key.day)
        offset = key.utcoffset()
        if t is dt.datetime:
            # Aware datetimes compare as instants; naive ones by their fields (fold aside).
            base = key.replace(tzinfo=None, fold=0) - (offset or dt.timedelta(0))
            return (offset is not None, base.year, base.month, base.day, base.hour,
                    base.minute, base.second, base.microsecond)
        micros = ((key.hour * 60 + key.minute) * 60 + key.second) * 10**6 + key.microsecond
        if offset is not None:
            micros -= (offset.days * 86400 + offset.seconds) * 10**6 + offset.microseconds
        return (offset is not None, micros)
    uuid = sys.modules.get("uuid")
    if uuid is not None and t is uuid.UUID:
        return (key.int,)
    return None


def _module_types(*names: tuple[str, str]) -> list[type]:
    out = []
    for module, name in names:
        m = sys.modules.get(module)
        if m is not None:
            out.append(getattr(m, name))
    return out
