"""Reading user images and writing label images, with errors a microscopist can act on.

Image files are read through ``bioio`` and its reader plugins (bioio-ome-tiff,
bioio-tifffile, bioio-ome-zarr, and bioio-czi / bioio-nd2 / bioio-lif when the
``formats`` extra is installed); :class:`ImageSelection` picks the scene, channel, time
point and z-plane (or a max projection) of a multi-dimensional file. PNG is read with
scikit-image (bioio's PNG plugin pulls an ffmpeg binary for a format with no metadata).

Pixel sizes travel with images: :func:`read_image_data` returns the plane with the
physical pixel size the file states (``BioImage.physical_pixel_sizes``, converted to µm
with the file's units), so measurements offline are in µm like those of a live run.

:func:`write_labels_tif` writes the pixel size back as standard TIFF resolution tags
(pixels per centimetre), which Fiji, QuPath, napari and tifffile read.
"""

from __future__ import annotations

from liveseg.imageio.base import IMAGE_SUFFIXES, ImageError, check_image, image_stem, list_images
from liveseg.imageio.reader import (
    ImageData,
    ImageSelection,
    PixelSize,
    installed_readers,
    read_image,
    read_image_data,
    read_pixel_size,
    resolve_pixel_size,
)
from liveseg.imageio.writers import (
    read_classes_tif,
    resolution_tags,
    write_classes_tif,
    write_labels_tif,
)

__all__ = [
    "IMAGE_SUFFIXES",
    "ImageData",
    "ImageError",
    "ImageSelection",
    "PixelSize",
    "check_image",
    "image_stem",
    "installed_readers",
    "list_images",
    "read_classes_tif",
    "read_image",
    "read_image_data",
    "read_pixel_size",
    "resolution_tags",
    "resolve_pixel_size",
    "write_classes_tif",
    "write_labels_tif",
]
