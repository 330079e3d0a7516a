"""Plugins: a host that loads a folder's modules in a domain and reloads them when they change.

Modules: ``_host`` (``PluginHost``: generations of domains, calls routed to the newest),
``_folder`` (what a plugin folder holds, and the signature that tells it changed).
"""
