# setuptools needs this file for cffi_modules: cffi compiles the C core
# (out-of-line API mode) while the package is installed; and for the one
# plain extension, _exitcall (a C-level __exit__, see shmshare/_core/guard.py).
from setuptools import Extension, setup

setup(
    cffi_modules=["shmshare/_core/_build.py:ffibuilder"],
    ext_modules=[Extension("shmshare._core._exitcall", ["shmshare/_core/ext/exitcall.c"],
                           py_limited_api=True, extra_compile_args=["-Wall", "-Wextra"])],
)
