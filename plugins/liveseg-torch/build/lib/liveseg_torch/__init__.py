"""liveseg-torch: the default deep model of liveseg.

A small convolutional encoder-decoder predicts, for every pixel, the probability of being
inside a nucleus and a normalised distance to the nucleus boundary; a seeded watershed
turns the two maps into instance labels. It runs live on an ordinary CPU and fine-tunes
in minutes.

Importing this package does not import torch; the backend loads it when it is built.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
