"""Segment one image larger than a machine, block by block, with labels stitched across blocks.

The method is cellpose's distributed segmentation (``cellpose/contrib/
distributed_segmentation.py``), on :mod:`dask.array`:

1. The image (an OME-Zarr plane, a zarr array, a TIFF, or a grid acquisition's frames
   placed by stage position, :mod:`liveseg.grid`) is a dask array chunked in
   ``block`` × ``block`` tiles. :func:`dask.array.overlap.overlap` gives every tile a halo of
   ``overlap`` pixels on each inner side (about twice the object diameter, so an object
   near a tile border is seen whole by both tiles).
2. Each tile is segmented on its own by the configured chain (one chain per Dask worker,
   built once by a worker plugin); the halo is cut off again and the tile's core labels,
   numbered 1..n within the tile, are written to a scratch zarr aligned with the tiles.
   A tile returns only ``n`` and its four one-pixel edges.
3. On the client, tile ``k``'s labels are offset by the number of labels before it (ids
   become globally unique), and labels that meet across a tile face are joined: two
   labels across a face are linked when they share at least half of the shorter of
   their two face lengths (a piece of one object cut by the face shares its whole face;
   two different objects that merely touch near the face share a few pixels). The graph
   of links is relabelled with :func:`scipy.sparse.csgraph.connected_components`.
4. A second pass maps every tile's labels through that table and writes one OME-Zarr
   label image with :func:`ome_zarr.writer.write_labels` (chunked by tile, with the pixel
   size), under a copy of the image written with :func:`ome_zarr.writer.write_image`.

A worker holds one tile with its halo and the chain's working copies of it, never the
whole image, so memory per worker is bounded by ``block`` (``benchmarks/
mosaic_memory.py`` measures it). ``workers=N`` starts a ``distributed.LocalCluster`` on
127.0.0.1; ``scheduler=ADDRESS`` uses an existing one (``OUT`` must then be on storage
every worker can reach, as for ``liveseg batch``); neither runs in this process.
"""

from __future__ import annotations

from liveseg.mosaic._image import (
    MosaicImage,
    open_mosaic_image,
    read_provenance,
    write_ome_mosaic,
)
from liveseg.mosaic._run import LABELS_NAME, segment_mosaic, summary_line
from liveseg.mosaic._stitch import stitch_table
from liveseg.mosaic._tiles import ChainSpec, TileChain, TileRecord, estimate_overlap

__all__ = [
    "LABELS_NAME",
    "ChainSpec",
    "MosaicImage",
    "TileChain",
    "TileRecord",
    "estimate_overlap",
    "open_mosaic_image",
    "read_provenance",
    "segment_mosaic",
    "stitch_table",
    "summary_line",
    "write_ome_mosaic",
]
