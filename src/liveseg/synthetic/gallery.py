"""Gallery PNGs of the sample types: ``python -m liveseg.synthetic.gallery DIR``.

Each ``gallery-<kind>.png`` shows three ``train`` frames and one held-out ``test`` frame
(top: the image, contrast-stretched; bottom: the label outlines in red), seeds 10-13.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

__all__ = ["write_gallery"]


def write_gallery(kind: str, path: Path, shape: tuple[int, int] = (256, 256)) -> Path:
    """Write the gallery of sample type ``kind`` to ``path`` (PNG) and return it."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from skimage.segmentation import find_boundaries

    from liveseg.synthetic import generate_sample

    fig, axs = plt.subplots(2, 4, figsize=(12, 6.2))
    for j in range(4):
        split = "train" if j < 3 else "test"
        img, lab = generate_sample(kind, 10 + j, shape, split)
        im = img.astype(np.float32)
        lo, hi = np.percentile(im, (0.5, 99.5))
        gray = np.clip((im - lo) / max(float(hi - lo), 1e-6), 0, 1)
        axs[0, j].imshow(gray, cmap="gray")
        axs[0, j].set_title(
            f"{kind}, {split} (seed {10 + j}), {int(lab.max())} objects", fontsize=9
        )
        rgb = np.dstack([gray] * 3)
        rgb[find_boundaries(lab, mode="inner")] = (1.0, 0.2, 0.2)
        axs[1, j].imshow(rgb)
        for ax in axs[:, j]:
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=56)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    """Write ``gallery-<kind>.png`` for every sample type into the folder given."""
    from liveseg.synthetic import SAMPLE_TYPES

    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0] if args else "docs")
    out.mkdir(parents=True, exist_ok=True)
    for kind in SAMPLE_TYPES:
        print(write_gallery(kind, out / f"gallery-{kind}.png"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
