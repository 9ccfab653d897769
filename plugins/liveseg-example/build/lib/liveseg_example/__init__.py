"""liveseg-example: the plugin template a third party copies.

One backend (``spots``), one sink (``jsonl``), one measurement (``example_peak``) and one
trigger (``visit_brightest``), registered in :mod:`liveseg_example.plugin`.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
