"""Keys and values as bytes: what a shared object stores.

**Keys.**  A process-independent index needs equal keys to give equal bytes.
Python's ``hash()`` is salted per process, and pickles of equal keys differ
(``pickle.dumps(1) != pickle.dumps(1.0)``; a class of the main script
pickles as ``__main__.C`` in one process and ``__mp_main__.C`` in a spawn
child), so neither can be the index.  :func:`encode_key` returns
``(data, cmp_len)``: the first ``cmp_len`` bytes are a *canonical*
encoding, equal exactly when the keys are equal in the sense of ``dict``:

* ``str`` — its UTF-8 bytes (the fast path; UTF-8 never contains 0xFF, the
  byte that starts every other type's tagged, length-prefixed encoding);
* numbers: ``int``, ``bool`` and every number equal to an int share one
  integer encoding (``d[1]``, ``d[1.0]``, ``d[True]``, ``d[Fraction(1)]``,
  ``d[Decimal(1)]``, ``d[np.int64(1)]`` are one key); other numbers equal to
  a float share its IEEE bytes (every NaN is one key here, unlike ``dict``,
  where a NaN only equals itself by identity); other rationals (``Fraction``,
  ``Decimal``) are their exact ratio; numpy scalars are their ``.item()``;
* ``bytes``, ``None``, and ``tuple``/``frozenset`` of keys;
* subclasses of those that keep their base's ``==`` and ``hash()``
  (``IntEnum``, ``StrEnum``, namedtuples): the base's encoding;
* Enum members, instances of dataclasses whose ``__eq__`` the dataclass
  made (frozen ones are hashable), classes, ``datetime``/``date``/``time``/
  ``timedelta`` and ``UUID``: what their ``==`` compares, with the class
  named by module and qualified name (``__mp_main__`` read as ``__main__``).

Any other key is refused with a TypeError (see :func:`_refuse`): shmshare
cannot know what its ``==`` means, and encoding it some other way would
split keys that Python calls equal.

The bytes after ``cmp_len`` are a display suffix — the pickled original key,
present only when decoding the canonical part would not give back the same
object (``True``, ``1.0``, ``(1.0, 'a')``, an Enum member...) — so iteration
returns the key as first inserted, as ``dict`` does.

**Values** are pickled with protocol 5; what ``pickle`` refuses (lambdas,
closures, classes defined in functions) is tried with ``cloudpickle``.  A
large contiguous writable buffer (a numpy array, a bytearray) is handed to
the store as the three parts of its ordinary pickle (:func:`split_pickle`),
so that its data is copied once, from where it lies, and read back in one
copy too (``_core/src/dict_split.c``).
"""

from __future__ import annotations

import pickle
import struct
from typing import Any

__all__ = ["PLAIN_TYPES", "SPLIT_MIN", "decode_key", "dumps", "dumps_split", "encode_key",
           "large_parts", "loads", "split_pickle"]

_TAG = 0xFF  # never occurs in UTF-8, so it cannot start a str key
_INT, _FLOAT, _COMPLEX, _BYTES, _NONE, _TUPLE, _FSET, _STR, _RATIO, _OBJ = (
    b"\xffI", b"\xffF", b"\xffC", b"\xffB", b"\xffN", b"\xffT", b"\xffZ", b"\xffS",
    b"\xffQ", b"\xffO")
_LEGACY_PICKLE = b"\xffP"  # other keys by their pickle, before key_types (decoded, never made)
_DOUBLE = struct.Struct(">d")
_U32 = struct.Struct(">I")
_NAN = _DOUBLE.pack(float("nan"))


def _tagged(tag: bytes, body: bytes) -> bytes:
    # tag + length + body: self-delimiting, so a display suffix can follow.
    return tag + _U32.pack(len(body)) + body


def _int(n: int) -> bytes:
    return _tagged(_INT, n.to_bytes((n.bit_length() + 8) // 8, "big", signed=True))


def _canonical(key: Any) -> tuple[bytes, bool]:
    """(canonical bytes, exact): exact is False when decoding would change a type."""
    t = type(key)
    if t is str:
        return _tagged(_STR, key.encode("utf-8", "surrogatepass")), True
    if t is int:
        return _int(key), True
    if t is bytes:
        return _tagged(_BYTES, key), True
    if key is None:
        return _tagged(_NONE, b""), True
    if t is bool:
        return _int(int(key)), False
    if t is float:
        if key.is_integer():
            return _int(int(key)), False
        return _tagged(_FLOAT, _NAN if key != key else _DOUBLE.pack(key)), True
    if t is complex:
        if key.imag == 0:
            return _canonical(key.real)[0], False
        return _tagged(_COMPLEX, _DOUBLE.pack(key.real) + _DOUBLE.pack(key.imag)), True
    if t is tuple or t is frozenset:
        parts = [_canonical(item) for item in key]
        encoded = [p for p, _ in parts]
        if t is frozenset:
            encoded.sort()  # equal sets, equal bytes, whatever the iteration order
        return (_tagged(_TUPLE if t is tuple else _FSET, b"".join(encoded)),
                all(exact for _, exact in parts))
    from .key_types import canonical_other

    return canonical_other(key), False


def encode_key(key: Any) -> tuple[bytes, int]:
    """``(data, cmp_len)`` for ``key``; see the module docstring."""
    if type(key) is str and key:  # the hot path: plain UTF-8, no tag
        data = key.encode("utf-8", "surrogatepass")
        return data, len(data)
    canonical, exact = _canonical(key)
    if exact:
        return canonical, len(canonical)
    display = pickle.dumps(key, protocol=5)
    if canonical[:2] == _STR and len(canonical) > 6:
        # Equal to a non-empty str (a StrEnum member, np.str_): the hot path's
        # bytes, then 0xFF -- which UTF-8 never holds -- before the display suffix.
        return canonical[6:] + b"\xff" + display, len(canonical) - 6
    return canonical + display, len(canonical)


def _decode(data: bytes, pos: int) -> tuple[Any, int]:
    """Decode the tagged item at ``pos``; return it and the position after it."""
    tag = data[pos:pos + 2]
    (n,) = _U32.unpack_from(data, pos + 2)
    body, end = pos + 6, pos + 6 + n
    if end > len(data):
        raise ValueError("truncated key encoding")
    if tag == _STR:
        return data[body:end].decode("utf-8", "surrogatepass"), end
    if tag == _INT:
        return int.from_bytes(data[body:end], "big", signed=True), end
    if tag == _BYTES:
        return data[body:end], end
    if tag == _NONE:
        return None, end
    if tag == _FLOAT:
        return _DOUBLE.unpack_from(data, body)[0], end
    if tag == _COMPLEX:
        return complex(_DOUBLE.unpack_from(data, body)[0],
                       _DOUBLE.unpack_from(data, body + 8)[0]), end
    if tag in (_TUPLE, _FSET):
        items, p = [], body
        while p < end:
            item, p = _decode(data, p)
            items.append(item)
        return (tuple(items) if tag == _TUPLE else frozenset(items)), end
    if tag == _LEGACY_PICKLE:
        return pickle.loads(data[body:end]), end
    if tag in (_RATIO, _OBJ):
        return None, end  # never decoded: a display suffix always follows these
    raise ValueError(f"unknown key encoding tag {tag!r}")


def decode_key(data: bytes) -> Any:
    """The key that :func:`encode_key` turned into ``data`` (its display form if any)."""
    if data[1:2] == b"I" and data[0] == _TAG and len(data) == 6 + _U32.unpack_from(data, 2)[0]:
        return int.from_bytes(data[6:], "big", signed=True)  # an int, no display suffix
    if not data or data[0] != _TAG:
        sep = data.find(_TAG)
        if sep < 0:
            return data.decode("utf-8", "surrogatepass")
        return pickle.loads(data[sep + 1:])  # a str-equal key's display suffix
    key, end = _decode(data, 0)
    if end < len(data):
        return pickle.loads(data[end:])  # the display suffix: the key as first inserted
    return key


#: What pickle raises for values that cloudpickle may still manage.
_PICKLE_REFUSED = (pickle.PicklingError, AttributeError, TypeError)


def dumps(value: Any) -> bytes:
    """Pickle ``value`` (protocol 5), falling back to cloudpickle for what pickle refuses."""
    try:
        return pickle.dumps(value, protocol=5)
    except _PICKLE_REFUSED as first:
        import cloudpickle

        try:
            return bytes(cloudpickle.dumps(value, protocol=5))
        except Exception:
            raise first from None


loads = pickle.loads

#: Buffer values from this many bytes up are stored split (= _core._hotpath.SPLIT_MIN,
#: from which the C d[k] = v hands them over).
SPLIT_MIN = 1 << 20
_I32_MAX = (1 << 31) - 1


def split_pickle(value: Any) -> tuple[bytes, memoryview | bytearray, bytes] | None:
    """``(head, data, tail)``: the ordinary pickle of ``value``, a bytearray or a
    contiguous writable array of at least SPLIT_MIN bytes, in the layout of
    ``_core/src/dict_split.c`` -- ``data`` its memory, not a copy; else None."""
    if type(value) is bytearray:
        n = len(value)
        # pickle.dumps(bytearray, 5) is BYTEARRAY8, the bytes, MEMOIZE, STOP.
        return (_split_head(b"", n), value, b"\x94.") if n >= SPLIT_MIN else None
    if getattr(type(value), "__array_interface__", None) is None or (
            getattr(value, "nbytes", 0) < SPLIT_MIN):
        return None
    buffers: list[pickle.PickleBuffer] = []
    try:
        header = pickle.dumps(value, protocol=5, buffer_callback=buffers.append)
    except Exception:
        return None  # dumps() says what is wrong with it
    if len(buffers) != 1:
        return None  # in band (not contiguous), or several: pickled as a whole
    try:
        data = buffers[0].raw()
    except BufferError:
        return None
    body = _unframed(header)
    if body is None or data.readonly:
        return None
    at = _next_buffer_at(body)
    if at is None or at > _I32_MAX - 17:
        return None
    return _split_head(body[:at], data.nbytes), data, body[at + 1:]


#: Types whose values :func:`large_parts` never splits: a caller on a hot path
#: may skip the call for them.
PLAIN_TYPES = frozenset((int, str, float, bool, type(None), tuple, list, dict, set))
_BYTES_MIN = 64 * 1024  # = _core._hotpath.DIRECT_BYTES_MIN: pickle writes these unframed
_U32_MAX = (1 << 32) - 1


def large_parts(value: Any) -> tuple[bytes, Any, bytes] | None:
    """``(head, data, tail)`` for a store that writes ``head + data + tail`` in one
    copy of ``data``: a large array or bytearray split (:func:`split_pickle`), or
    a bytes object of 64 KiB or more as exactly the pickle ``pickle.dumps(b, 5)``
    makes of it (PROTO 5, BINBYTES and its length, the bytes, MEMOIZE, STOP);
    else None (pickle it whole)."""
    if type(value) is bytes:
        n = len(value)
        if not _BYTES_MIN <= n <= _U32_MAX:
            return None
        return b"\x80\x05B" + n.to_bytes(4, "little"), value, b"\x94."
    return split_pickle(value)


def dumps_split(value: Any) -> bytes:
    """``dumps(value)``, a large array or bytearray in the split layout
    (:func:`split_pickle`), so that a read copies its data once: for stores that
    take whole pickles (a list's extend, slice assignment, initial items)."""
    parts = split_pickle(value) if type(value) not in PLAIN_TYPES else None
    return dumps(value) if parts is None else b"".join(parts)


def _split_head(before: bytes, n: int) -> bytes:
    # PROTO 5, BININT <offset of the data>, POP, what comes before it, BYTEARRAY8 <n>
    return (b"\x80\x05J" + (8 + len(before) + 9).to_bytes(4, "little") + b"0" + before +
            b"\x96" + n.to_bytes(8, "little"))


def _unframed(header: bytes) -> bytes | None:
    """The opcodes of ``header`` after PROTO 5 and its one FRAME, if any; None if
    it is framed otherwise."""
    if header[:2] != b"\x80\x05":
        return None
    if header[2:3] != b"\x95":
        return header[2:]
    return header[11:] if int.from_bytes(header[3:11], "little") == len(header) - 11 else None


def _next_buffer_at(body: bytes) -> int | None:
    """Where ``body``'s one NEXT_BUFFER is, not followed by READONLY_BUFFER and
    with no other FRAME; else None."""
    import pickletools

    at = None
    for op, _, pos in pickletools.genops(body):
        if op.name == "NEXT_BUFFER" and at is None:
            at = pos
        elif op.name in ("NEXT_BUFFER", "READONLY_BUFFER", "FRAME", "PROTO"):
            return None
    return at
