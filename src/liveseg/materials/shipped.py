"""The shipped ``grains`` and ``pores`` pixel classifiers, and how they were built.

Both are random forests (:mod:`liveseg.builtins.pixel_classifier`) trained on generated
sections of the ``train`` styles (seeds 0-2), from a class-balanced random sample of
truth pixels (8 000 per class per image). The model directories under
``liveseg/materials/models/`` are what ``python -m liveseg.materials.shipped`` writes;
rebuilding with the same scikit-learn gives the same forests.

A step refers to them by name (``model: grains``); a registry model of the same name
takes precedence.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["SHIPPED", "build", "shipped_dir"]

SHIPPED: tuple[str, ...] = ("grains", "pores")


def shipped_dir(name: str) -> Path | None:
    """The directory of a shipped model, or ``None`` if ``name`` is not one."""
    d = Path(__file__).parent / "models" / name
    return d if name in SHIPPED and (d / "model.json").is_file() else None


def build(name: str, out: Path, seeds: tuple[int, ...] = (0, 1, 2)) -> Path:
    """Train and save shipped model ``name`` into ``out``."""
    from liveseg.builtins.pixel_classifier import save, train
    from liveseg.materials.generate import grain_section, porous_section

    make = {"grains": grain_section, "pores": porous_section}[name]
    rng = np.random.default_rng(0)
    images, scribbles = [], []
    names: tuple[str, ...] = ()
    for seed in seeds:
        sec = make(seed, style="train")
        names = sec.class_names
        scr = np.zeros(sec.classes.shape, dtype=np.uint8)
        for c in range(len(names)):
            idx = np.flatnonzero(sec.classes.ravel() == c)
            pick = rng.choice(idx, min(idx.size, 8000), replace=False)
            scr.ravel()[pick] = c + 1
        images.append(sec.image)
        scribbles.append(scr)
    model = train(images, scribbles, class_names=names)
    return save(
        model,
        out,
        description=f"shipped {name} pixel classifier (generated train-style sections)",
        training_style=f"materials:{name}:train",
    )


if __name__ == "__main__":
    for n in SHIPPED:
        print(build(n, Path(__file__).parent / "models" / n))
