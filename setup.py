"""Build of the one C module: tar framing and threaded SHA-256 for the fast reader (see its header comment).

The module is optional: without a compiler or OpenSSL's headers (Debian:
libssl-dev) the build of it is skipped, ``pip install`` still succeeds, and
``cowspec`` reads images with the model's own streaming reader.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "cowcheck._fastlayer",
            ["conformance/cowcheck/_fastlayer.c"],
            libraries=["crypto"],
            extra_compile_args=["-O3", "-Wall", "-Wextra", "-Wno-unused-parameter"],
            optional=True,
        )
    ]
)
