"""Build of the one C module: hashing and tar framing for large layers (see its header comment)."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "cowcheck._fastlayer",
            ["conformance/cowcheck/_fastlayer.c"],
            extra_compile_args=["-O3", "-Wall", "-Wextra", "-Wno-unused-parameter"],
        )
    ]
)
