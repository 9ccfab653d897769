"""Pixel sizes read from what microscopy tools write: ImageJ, OME-TIFF, TIFF tags, OME-Zarr."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from liveseg.imageio import read_image_data, read_pixel_size, write_labels_tif

IMG = (np.arange(48 * 64).reshape(48, 64) % 4000).astype(np.uint16)


@pytest.mark.parametrize("unit", ["um", "micron", "\\u00B5m"])  # Fiji escapes µ
def test_imagej_tiff_resolution_and_unit(tmp_path, unit):
    # What Fiji saves after Image ▸ Properties (pixel width 0.5, unit micron/µm).
    p = tmp_path / "fiji.tif"
    tifffile.imwrite(p, IMG, imagej=True, resolution=(1 / 0.5, 1 / 0.5), metadata={"unit": unit})
    size = read_pixel_size(p)
    assert size is not None and size.source == "tifffile"
    assert size.x_um == pytest.approx(0.5) and size.y_um == pytest.approx(0.5)


def test_imagej_nanometres_and_uncalibrated(tmp_path):
    p = tmp_path / "nm.tif"
    tifffile.imwrite(p, IMG, imagej=True, resolution=(1 / 325, 1 / 400), metadata={"unit": "nm"})
    size = read_pixel_size(p)
    assert size is not None and (size.y_um, size.x_um) == pytest.approx((0.4, 0.325))
    raw = tmp_path / "raw.tif"
    tifffile.imwrite(raw, IMG, imagej=True)  # Fiji's default: 1 pixel per pixel
    assert read_pixel_size(raw) is None


@pytest.mark.parametrize(("value", "unit", "um"), [(0.65, "µm", 0.65), (650, "nm", 0.65)])
def test_ome_tiff_physical_size(tmp_path, value, unit, um):
    p = tmp_path / "img.ome.tif"
    meta = {
        "axes": "YX",
        "PhysicalSizeX": value,
        "PhysicalSizeY": value,
        "PhysicalSizeXUnit": unit,
        "PhysicalSizeYUnit": unit,
    }
    tifffile.imwrite(p, IMG, ome=True, metadata=meta)
    size = read_pixel_size(p)
    assert size is not None and size.source == "ome-tiff" and size.um == pytest.approx(um)


def test_plain_tiff_resolution_tags(tmp_path):
    um = tmp_path / "um.tif"
    tifffile.imwrite(um, IMG, resolution=(1 / 0.5, 1 / 0.5), resolutionunit="MICROMETER")
    assert read_pixel_size(um).um == pytest.approx(0.5)
    cm = tmp_path / "cm.tif"
    tifffile.imwrite(cm, IMG, resolution=(1e4 / 0.8, 1e4 / 0.8), resolutionunit="CENTIMETER")
    assert read_pixel_size(cm).um == pytest.approx(0.8)
    dpi = tmp_path / "dpi.tif"  # a screenshot tool's 72 dpi says nothing about the sample
    tifffile.imwrite(dpi, IMG, resolution=(72, 72), resolutionunit="INCH")
    assert read_pixel_size(dpi) is None
    bare = tmp_path / "bare.tif"
    tifffile.imwrite(bare, IMG)
    assert read_pixel_size(bare) is None


def _ome_zarr(path, scale, unit):
    """An NGFF 0.5 image group as OME-Zarr writers lay it out (zarr v3, attrs under 'ome')."""
    import zarr

    root = zarr.open_group(str(path), mode="w", zarr_format=3)
    root.create_array("0", data=IMG[None])
    axes = [{"name": "c", "type": "channel"}] + [
        {"name": n, "type": "space", **({"unit": unit} if unit else {})} for n in ("y", "x")
    ]
    root.attrs["ome"] = {
        "version": "0.5",
        "multiscales": [
            {
                "axes": axes,
                "datasets": [
                    {
                        "path": "0",
                        "coordinateTransformations": [{"type": "scale", "scale": [1.0, *scale]}],
                    }
                ],
            }
        ],
    }
    return path


def test_ome_zarr_scale(tmp_path):
    p = _ome_zarr(tmp_path / "a.ome.zarr", [0.65, 0.65], "micrometer")
    size = read_pixel_size(p)
    assert size is not None and size.source == "ome-zarr" and size.um == pytest.approx(0.65)
    nm = _ome_zarr(tmp_path / "b.ome.zarr", [325.0, 325.0], "nanometer")
    assert read_pixel_size(nm).um == pytest.approx(0.325)
    data = read_image_data(p)
    assert data.array.shape == (48, 64) and data.pixel_size_um == pytest.approx(0.65)
    assert json.loads(json.dumps(data.source)) == "ome-zarr"


def test_labels_tif_carries_the_pixel_size(tmp_path):
    labels = np.zeros((48, 64), np.uint32)
    labels[5:10, 5:10] = 1
    p = tmp_path / "img_labels.tif"
    write_labels_tif(p, labels, pixel_size_um=0.65)
    assert read_pixel_size(p).um == pytest.approx(0.65, rel=1e-9)
    with tifffile.TiffFile(p) as tif:  # plain TIFF tags: Fiji / QuPath read them too
        assert tif.pages.first.tags["ResolutionUnit"].value == tifffile.RESUNIT.CENTIMETER
    np.testing.assert_array_equal(tifffile.imread(p), labels)
    write_labels_tif(tmp_path / "none.tif", labels)
    assert read_pixel_size(tmp_path / "none.tif") is None


def test_png_and_unreadable_metadata(tmp_path):
    from skimage.io import imsave

    png = tmp_path / "a.png"
    imsave(png, (IMG // 16).astype(np.uint8), check_contrast=False)
    assert read_pixel_size(png) is None
    data = read_image_data(png)
    assert data.pixel_size_um is None and data.source is None


def test_fiji_hyperstack_plane_and_pixel_size(tmp_path):
    from liveseg.imageio import ImageError, ImageSelection

    # What Fiji saves for a T×Z×C hyperstack with a calibration (Image ▸ Properties).
    data = (np.arange(2 * 4 * 3 * 32 * 32) % 60000).astype(np.uint16).reshape(2, 4, 3, 32, 32)
    p = tmp_path / "hyper.tif"
    meta = {"axes": "TZCYX", "unit": "um"}
    tifffile.imwrite(p, data, imagej=True, resolution=(1 / 0.5, 1 / 0.5), metadata=meta)
    got = read_image_data(p, ImageSelection(channel=1, timepoint=1, z=2))
    np.testing.assert_array_equal(got.array, data[1, 2, 1])
    assert got.pixel_size_um == pytest.approx(0.5) and got.source == "tifffile"
    got = read_image_data(p, ImageSelection(channel=2, timepoint=0, z="max"))
    np.testing.assert_array_equal(got.array, data[0, :, 2].max(axis=0))
    with pytest.raises(ImageError, match=r"has 3 channels \(indices 0-2\)"):
        read_image_data(p)
