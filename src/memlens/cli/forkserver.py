"""Imported first by multiprocessing's fork server under ``memlens run``
(see :mod:`memlens.cli.spawn`): the server, and so each child it forks,
gets the ``profile`` builtin before any module of the program runs."""

from memlens.cli.spawn import prepared

prepared(None)
