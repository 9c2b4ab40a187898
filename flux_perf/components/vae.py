"""VAE speed-ups: channels-last memory format and compiled encoder/decoder."""

from __future__ import annotations

import torch

from .base import Component, Phase


class VaeChannelsLast(Component):
    name = "vae-channels-last"
    summary = "VAE convolutions in channels-last (NHWC) memory format"
    phase = Phase.LAYOUT
    lossless = True

    def apply(self, pipe) -> None:
        pipe.vae.to(memory_format=torch.channels_last)


class VaeCompile(Component):
    name = "vae-compile"
    summary = "torch.compile of the VAE encoder and decoder (static shapes)"
    phase = Phase.VAE_COMPILE
    lossless = True
    conflicts_with = frozenset({"vae-tiling"})  # tiling loops over tiles on the host

    def apply(self, pipe) -> None:
        pipe.vae.encoder.compile(fullgraph=True, dynamic=False)
        pipe.vae.decoder.compile(fullgraph=True, dynamic=False)

