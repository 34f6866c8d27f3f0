"""Build the optional C accelerator; sockscope works without it (pure Python), only slower."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("sockscope._native", ["src/sockscope/_native.c"], optional=True, extra_compile_args=["-O2"])])
