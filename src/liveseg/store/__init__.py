"""The run directory: everything one acquisition (or batch) leaves behind.

```
<run>/images.ome.zarr               raw frames, written by pymmcore-plus's own sink
<run>/images.ome.zarr/<p>/labels/   OME-NGFF label images beside each position's image
<run>/triggered.ome.zarr/<series>/  one image (c, z, y, x) per triggered series, with labels
<run>/frames.csv                    one row per frame attempt (append-only log)
<run>/objects.csv                   one row per object per frame (+ objects.parquet at end)
<run>/events.jsonl                  errors, skips, triggers, flags
<run>/run.json                      config, versions, hardware, start/end, summary
```

Every table is append-only and flushed per frame, so a run killed at any moment leaves
files that :class:`RunReader` can read: a frame's latest row in ``frames.csv`` wins
(``liveseg resegment`` appends rather than rewrites), and a half-written last line is
ignored.
"""

from __future__ import annotations

from liveseg.store import ngff
from liveseg.store.layout import (
    check_output_dir,
    create_label_array,
    image_group,
    image_series_index,
    run_is_live,
)
from liveseg.store.ngff import write_label_image
from liveseg.store.reader import RunReader
from liveseg.store.tables import (
    ACQUIRED,
    CLASSES,
    FRAME_COLUMNS,
    IMAGES,
    LOCK,
    TRIGGERED,
    WRITE_FAILED,
    compact_frames,
    latest_frame_rows,
    write_json_atomic,
)
from liveseg.store.triggered import TriggeredStore
from liveseg.store.writer import RunStore

__all__ = [
    "ACQUIRED",
    "CLASSES",
    "FRAME_COLUMNS",
    "IMAGES",
    "LOCK",
    "TRIGGERED",
    "WRITE_FAILED",
    "RunReader",
    "RunStore",
    "TriggeredStore",
    "check_output_dir",
    "compact_frames",
    "create_label_array",
    "image_group",
    "image_series_index",
    "latest_frame_rows",
    "ngff",
    "run_is_live",
    "write_json_atomic",
    "write_label_image",
]
