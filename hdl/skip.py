"""Skip FIFO sizing (provisional: a generous bound while the exact derivation is done)."""

from __future__ import annotations

from ..config import Depthwise, EngineConfig

__all__ = ["skip_fifo_depth"]


def skip_fifo_depth(config: EngineConfig, tensor: str) -> int:
    spec = config.tensors[tensor]
    lanes = config.input_lanes if tensor == config.input.name else config.stage(tensor).lanes_out
    beats = spec.channels // lanes
    pixels = 8 * len(config.stages)
    for stage in config.stages:
        if isinstance(stage, Depthwise):
            pixels += (stage.footprint) * stage.input.width
    return pixels * beats + 64
