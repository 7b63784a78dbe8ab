"""cffi build script (out-of-line API mode), run by setuptools at install.

The C declarations live in ``cdef/*.h`` (one file per area) and the C sources
in ``src/*.c``; both are picked up by glob so that adding an area means adding
two files, not editing this script.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
import sysconfig
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent
SRC = HERE / "src"
CDEF = HERE / "cdef"

# Debug builds keep asserts and add sanitizers: SHMSHARE_DEBUG=1 pip install -e .
DEBUG = os.environ.get("SHMSHARE_DEBUG", "") not in ("", "0")
SANITIZE = os.environ.get("SHMSHARE_SANITIZE", "")

# A C function missing from shms.h would be called through an implicit int
# declaration (a truncated pointer, a crash): make that an error.
cflags = ["-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter", "-fvisibility=hidden",
          "-Werror=implicit-function-declaration"]
ldflags: list[str] = []
if DEBUG:
    cflags += ["-O1", "-g", "-UNDEBUG", "-DSHMS_DEBUG=1"]
else:
    cflags += ["-O2", "-DNDEBUG"]
if SANITIZE:  # e.g. SHMSHARE_SANITIZE=address,undefined (see .ci/sanitize)
    cflags += [f"-fsanitize={SANITIZE}", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer"]
    ldflags += [f"-fsanitize={SANITIZE}"]


def missing_prerequisites(cc: str | None = None, include_dir: str | None = None) -> str | None:
    """What building the C core from source lacks, as a message for the user; None if nothing.

    Both a C compiler and the Python headers (``Python.h``) are needed, and
    without this check the failure is a compiler traceback that names neither.
    """
    if cc is None:
        cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    if include_dir is None:
        include_dir = sysconfig.get_paths()["include"]
    problems = []
    words = shlex.split(cc)
    if not words or shutil.which(words[0]) is None:
        problems.append(f"no C compiler: {cc!r} was not found on PATH")
    if not (Path(include_dir) / "Python.h").is_file():
        problems.append(f"no Python headers: {include_dir}/Python.h does not exist")
    if not problems:
        return None
    return ("shmshare: cannot build its C core from source: " + "; ".join(problems) + ".\n"
            "Building from source needs a C compiler AND the Python development headers, "
            "e.g. `apt install gcc python3-dev` (Debian/Ubuntu), `dnf install gcc python3-devel` "
            "(Fedora), `apk add build-base python3-dev` (Alpine); or install a binary wheel "
            "(pip install --only-binary shmshare shmshare).")


_missing = missing_prerequisites()
if _missing:
    print(_missing, file=sys.stderr)
    raise SystemExit(_missing)

ffibuilder = FFI()
ffibuilder.cdef("\n".join(p.read_text() for p in sorted(CDEF.glob("*.h"))))

# Paths relative to the project root keep the build reproducible (setuptools
# runs this from the root); absolute ones are used when run from elsewhere.
_root = HERE.parent.parent
_sources = sorted(SRC.glob("*.c"))
if Path.cwd().resolve() == _root:
    _sources = [p.relative_to(_root) for p in _sources]

ffibuilder.set_source(
    "shmshare._core._lib",
    '#include "shms.h"\n#include <sys/ipc.h>\n#include <sys/shm.h>\n',
    sources=[str(p) for p in _sources],
    include_dirs=[str(SRC)],
    extra_compile_args=cflags,
    extra_link_args=ldflags,
    libraries=["pthread"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
