"""Build hook for the optional C switch appdomain._native._ext.

Everything else is declared in pyproject.toml.  The extension is optional: without a
compiler (or on an unsupported Python) the build prints a warning and appdomain installs
on its pure-Python call path.
"""

import os

from setuptools import Extension, setup

# setuptools writes appdomain.egg-info while it builds; kept in build/, not at the top of the
# checkout, where `python -m pytest` (which puts the checkout on sys.path) would find a
# second copy of appdomain's metadata and try to rewrite the top-level "marshal" it lists.
os.makedirs("build", exist_ok=True)

setup(
    options={"egg_info": {"egg_base": "build"}},
    ext_modules=[
        Extension(
            "appdomain._native._ext",
            [
                "appdomain/_native/module.c",
                "appdomain/_native/states.c",
                "appdomain/_native/switch.c",
                "appdomain/_native/method.c",
                "appdomain/_native/gilpeek.c",
                "appdomain/_native/marshal_check.c",
                "appdomain/_native/lock.c",
                "appdomain/_native/table.c",
                "appdomain/_native/invoke.c",
                "appdomain/_native/refs.c",
            ],
            depends=["appdomain/_native/native.h", "appdomain/_native/core.h"],
            optional=True,
        )
    ]
)
