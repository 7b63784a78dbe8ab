# setuptools needs this file only for cffi_modules: cffi compiles the C core
# (out-of-line API mode) while the package is installed.
from setuptools import setup

setup(cffi_modules=["shmshare/_core/_build.py:ffibuilder"])
