"""Sockets that move between domains and processes: duplicate_and_close, SocketInformation.

Modules: ``_socket`` (the public Socket, SocketInformation and the blob they cross as),
``_handoff`` (the two routes: same process, and SCM_RIGHTS to another process),
``_handoff_service`` (the serving thread that hands descriptors to other processes).
"""
