"""Options several commands share, defined once so they read and behave the same."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from collections.abc import Callable

    from liveseg.imageio import ImageSelection

__all__ = ["image_selection_options", "make_selection"]


def _z_choice(ctx: click.Context, param: click.Parameter, value: str | None) -> int | str | None:
    if value is None or value.lower() == "max":
        return None if value is None else "max"
    try:
        return int(value)
    except ValueError:
        raise click.BadParameter(f"{value!r}: give a z-plane index (0, 1, …) or 'max'") from None


def make_selection(
    channel: str | None = None,
    scene: str | None = None,
    timepoint: int | None = None,
    z: int | str | None = None,
) -> ImageSelection:
    """An :class:`~liveseg.imageio.ImageSelection` from option values (digits: an index)."""
    from liveseg.imageio import ImageSelection

    def index_or_name(value: str | None) -> int | str | None:
        return int(value) if value is not None and value.isdigit() else value

    return ImageSelection(
        channel=index_or_name(channel),
        scene=index_or_name(scene),
        timepoint=timepoint,
        z="max" if z == "max" else (int(z) if z is not None else None),
    )


def image_selection_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--channel``, ``--scene``, ``-t/--timepoint`` and ``--z`` to a command.

    The command receives them as one ``selection`` keyword
    (:class:`~liveseg.imageio.ImageSelection`), which picks the 2-D plane of every
    multi-dimensional input file (OME-TIFF, OME-Zarr, CZI, ND2, LIF).
    """

    @functools.wraps(func)
    def wrapper(
        *args: Any,
        channel: str | None,
        scene: str | None,
        timepoint: int | None,
        z_choice: int | str | None,
        **kwargs: Any,
    ) -> Any:
        kwargs["selection"] = make_selection(channel, scene, timepoint, z_choice)
        return func(*args, **kwargs)

    options = [
        click.option(
            "--channel", metavar="INDEX|NAME", help="Channel to segment (index or name)."
        ),
        click.option("--scene", metavar="INDEX|NAME", help="Scene/series/position of the file."),
        click.option("-t", "--timepoint", type=click.IntRange(min=0), help="Time point index."),
        click.option(
            "--z",
            "z_choice",
            metavar="N|max",
            callback=_z_choice,
            help="Z-plane index, or 'max' for a maximum-intensity projection.",
        ),
    ]
    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper
