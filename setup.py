"""Build hook for the optional C accelerator appdomain._native.

Everything else is declared in pyproject.toml.  The extension is optional: without a
compiler (or on an unsupported Python) the build prints a warning and appdomain installs
on its pure-Python call path.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "appdomain._native",
            [
                "appdomain/_native.c",
                "appdomain/_native_states.c",
                "appdomain/_native_switch.c",
                "appdomain/_native_method.c",
                "appdomain/_gilpeek.c",
            ],
            depends=["appdomain/_native.h", "appdomain/_native_core.h"],
            optional=True,
        )
    ]
)
