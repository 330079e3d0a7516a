"""The optional C switch: ``_ext``, built from the C files beside this one (typed in ``_ext.pyi``).

Without a compiler the build skips it and appdomain runs on its pure-Python routes.
"""
