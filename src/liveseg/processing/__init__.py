"""The frame path after acquisition: one processor, an ordered list of consumers.

See :mod:`liveseg.processing.processor` (the processor and the consumer protocol),
:mod:`liveseg.processing.consumers` (what each entry point hands frames to) and
:mod:`liveseg.processing.chain_runner` (the step timeout).
"""

from __future__ import annotations

from liveseg.processing.consumers import (
    BaseConsumer,
    FlagConsumer,
    LabelsCollector,
    LabelsConsumer,
    PluginNotifier,
    SignalsConsumer,
    TablesConsumer,
    TiffLabelsConsumer,
    TriggerConsumer,
    event_index,
    frame_row,
)
from liveseg.processing.processor import (
    Consumer,
    ConsumerReport,
    ConsumerSpec,
    FrameProcessor,
    class_summary,
    empty_objects,
)

__all__ = [
    "BaseConsumer",
    "Consumer",
    "ConsumerReport",
    "ConsumerSpec",
    "FlagConsumer",
    "FrameProcessor",
    "LabelsCollector",
    "LabelsConsumer",
    "PluginNotifier",
    "SignalsConsumer",
    "TablesConsumer",
    "TiffLabelsConsumer",
    "TriggerConsumer",
    "class_summary",
    "empty_objects",
    "event_index",
    "frame_row",
]
