# setuptools needs this file for cffi_modules: cffi compiles the C core
# (out-of-line API mode) while the package is built; and for the one plain
# extensions, _exitcall (a C-level __exit__, see shmshare/_core/guard.py) and
# _hotpath (d[k] = v, d[k], and a queue's put and get in one C call each, see
# shmshare/_core/heap.py and queue.py).
# Everything else is in pyproject.toml.
from setuptools import Extension, setup
from setuptools.command.build_py import build_py

# The extensions use only the stable ABI of CPython 3.10 (cffi builds its one
# with py_limited_api), so one wheel, tagged cp310-abi3, serves 3.10 and later.
LIMITED_API = "cp310"


class build_py_without_build_inputs(build_py):  # noqa: N801 - setuptools' naming
    """Leave the cffi build script out of the wheel (the sdist keeps it: MANIFEST.in)."""

    def find_package_modules(self, package, package_dir):  # type: ignore[no-untyped-def]
        modules = super().find_package_modules(package, package_dir)
        return [m for m in modules if (m[0], m[1]) != ("shmshare._core", "_build")]


setup(
    cffi_modules=["shmshare/_core/_build.py:ffibuilder"],
    ext_modules=[Extension("shmshare._core._exitcall", ["shmshare/_core/ext/exitcall.c"],
                           py_limited_api=True, extra_compile_args=["-Wall", "-Wextra"],
                           # It calls nothing of libc itself; linked to it all the same
                           # so that auditwheel can tell which libc the wheel is for.
                           extra_link_args=["-Wl,--no-as-needed", "-lc"]),
                 # d[k] = v, d[k], len(d), d.pop(k), a queue's put and get, a list's len()
                 # and a[i] without cffi's per-call costs (see shmshare/_core/ext/hotpath.c
                 # and the files beside it).
                 Extension("shmshare._core._hotpath", ["shmshare/_core/ext/hotpath.c",
                                                       "shmshare/_core/ext/read_cache.c",
                                                       "shmshare/_core/ext/hotqueue.c",
                                                       "shmshare/_core/ext/hotlist.c",
                                                       "shmshare/_core/ext/hotslots.c",
                                                       "shmshare/_core/ext/buffers.c",
                                                       "shmshare/_core/ext/hotkeys.c",
                                                       "shmshare/_core/ext/hotscan.c",
                                                       "shmshare/_core/ext/hotops.c",
                                                       "shmshare/_core/ext/dictitems.c"],
                           depends=["shmshare/_core/ext/hot.h"],
                           py_limited_api=True, include_dirs=["shmshare/_core/src"],
                           extra_compile_args=["-Wall", "-Wextra"],
                           extra_link_args=["-Wl,--no-as-needed", "-lc"])],
    cmdclass={"build_py": build_py_without_build_inputs},
    options={"bdist_wheel": {"py_limited_api": LIMITED_API}},
)
