"""Operator commands of the local constellation, run as ``python -m constellation <command>``.

``stack`` starts, stops, scales and inspects the local processes; ``run`` is ``make run``
(the whole constellation and the live demo); ``demo``, ``bench`` and ``bootstrap-model``
drive it; ``catalogue`` writes and checks the files derived from ``schemas/services.yaml``.
``python -m constellation --help`` lists them.
"""

from __future__ import annotations

from pathlib import Path

#: The source checkout: the workspace installs this package editable from ``scripts/src/``.
ROOT = Path(__file__).resolve().parents[3]
