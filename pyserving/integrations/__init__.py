"""Bridges from pyserving's models to other data systems.

* :mod:`pyserving.integrations.ray` — Ray Data: a ``Predictor`` for ``Dataset.map_batches``
  and ``run_on_ray``, what ``pyserving batch --ray`` runs (``pip install 'pyserving[ray]'``).

Each integration imports its third-party library only when its own module is imported;
``import pyserving`` imports none of them. Integrations sit above the server layer: they may
use ``pyserving.batch`` and everything below it, and nothing below imports them.
"""
