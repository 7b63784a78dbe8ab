"""Key records: written and read without the json module for the records shmshare writes
(a plain kind), byte for byte what json writes and reads; anything else goes through json,
so both paths always agree."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from shmshare.naming import keys
from shmshare.naming.keys import RECORD_SIZE, KeyRecord


def _json_dumps(rec: KeyRecord) -> bytes:
    return json.dumps({"v": 1, "proj_id": rec.proj_id, "kind": rec.kind,
                       "persist": rec.persist, "ipcns": rec.ipcns,
                       "creator": rec.creator}).encode() + b"\n"


def _json_parse(data: bytes) -> KeyRecord | None:
    try:
        obj = json.loads(data)
        rec = KeyRecord(int(obj["proj_id"]), str(obj["kind"]), bool(obj["persist"]),
                        int(obj.get("ipcns", 0)), int(obj.get("creator", 0)))
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    return rec if 1 <= rec.proj_id <= 255 else None


records = st.builds(KeyRecord, st.integers(-5, 300), st.text(max_size=20), st.booleans(),
                    st.integers(-(1 << 63), 1 << 64), st.integers(-(1 << 63), 1 << 64))


@given(records)
def test_a_record_is_written_as_json_writes_it_and_read_back(rec: KeyRecord) -> None:
    data = rec.dumps()
    assert data == _json_dumps(rec)
    padded = data[:-1].ljust(RECORD_SIZE - 1) + b"\n"  # as KeyFile.write pads it
    for form in (data, padded):
        assert KeyRecord._parse(form) == _json_parse(form)


@given(records, st.integers(0, 80), st.binary(max_size=4))
def test_a_damaged_record_reads_as_json_reads_it(rec: KeyRecord, at: int, junk: bytes) -> None:
    data = rec.dumps()
    for form in (data[:at] + junk + data[at:], data[:at] + data[at + 1:], data[:at]):
        assert KeyRecord._parse(form) == _json_parse(form)


@given(st.binary(max_size=120))
def test_any_bytes_read_as_json_reads_them(data: bytes) -> None:
    assert KeyRecord._parse(data) == _json_parse(data)


def test_the_common_record_needs_no_json() -> None:
    rec = KeyRecord(7, "dict", True, creator=12345)
    assert keys._plain_record(rec.dumps()) == rec
    assert keys._plain_dumps(rec) == rec.dumps()


def test_create_open_and_detach_import_no_json(tmp_path: Path) -> None:
    """A process that makes, opens and drops named objects does not load json (2 ms)."""
    code = textwrap.dedent(f"""
        import sys
        import shmshare
        d = shmshare.SharedDict("rec", create=True, project_dir={str(tmp_path)!r})
        e = shmshare.SharedDict("rec", create=False, project_dir={str(tmp_path)!r})
        d["k"] = 1
        e.detach()
        d.detach()
        print("json" in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
