"""Globally unique ids, and the labels that continue across tile faces joined into one."""

from __future__ import annotations

import numpy as np

__all__ = ["stitch_table"]


def _face_links(a: np.ndarray, b: np.ndarray, min_share: float) -> np.ndarray:
    """Pairs ``(a_id, b_id)`` of labels that continue across a face (rows of an (k, 2) array).

    ``a`` and ``b`` are the two one-pixel lines either side of the face (global ids, 0 =
    background). A pair is linked when it shares at least ``min_share`` of the shorter of
    the two labels' face lengths, so a cut object is joined and two objects that merely
    touch across the face are not.
    """
    both = (a > 0) & (b > 0)
    if not both.any():
        return np.zeros((0, 2), dtype=np.int64)
    pairs, shared = np.unique(np.stack([a[both], b[both]], axis=1), axis=0, return_counts=True)
    ida, na = np.unique(a[a > 0], return_counts=True)
    idb, nb = np.unique(b[b > 0], return_counts=True)
    len_a = na[np.searchsorted(ida, pairs[:, 0])]
    len_b = nb[np.searchsorted(idb, pairs[:, 1])]
    keep = shared >= min_share * np.minimum(len_a, len_b)
    out: np.ndarray = pairs[keep].astype(np.int64)
    return out


def stitch_table(
    records: np.ndarray, min_share: float = 0.5
) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Offsets per tile, the id table, the object count and the number of joins.

    ``records`` is the (ny, nx) grid of :class:`TileRecord`. Tile ``k``'s label ``i``
    becomes ``table[offsets[k] + i]``; ``table[0] == 0``; final ids are 1..N.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    ny, nx = records.shape
    counts = np.array([records[iy, ix].count for iy in range(ny) for ix in range(nx)])
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    total = int(counts.sum())

    def glob(line: np.ndarray, k: int) -> np.ndarray:
        g = line.astype(np.int64)
        g[g > 0] += offsets[k]
        return g

    links = [np.zeros((0, 2), dtype=np.int64)]
    for iy in range(ny):
        for ix in range(nx):
            k = iy * nx + ix
            rec = records[iy, ix]
            if ix + 1 < nx:
                right = records[iy, ix + 1]
                links.append(_face_links(glob(rec.right, k), glob(right.left, k + 1), min_share))
            if iy + 1 < ny:
                below = records[iy + 1, ix]
                links.append(_face_links(glob(rec.bottom, k), glob(below.top, k + nx), min_share))
    edges = np.concatenate(links)
    n = total + 1
    graph = coo_matrix(
        (np.ones(len(edges), dtype=np.int8), (edges[:, 0], edges[:, 1])), shape=(n, n)
    )
    _, comp = connected_components(graph, directed=False)
    # Final ids 1..N in order of each object's first piece; background stays 0.
    _, first, inverse = np.unique(comp[1:], return_index=True, return_inverse=True)
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first)] = np.arange(1, len(first) + 1)
    table = np.zeros(n, dtype=np.uint32)
    table[1:] = rank[inverse]
    n_objects = len(first)
    return offsets, table, n_objects, total - n_objects
