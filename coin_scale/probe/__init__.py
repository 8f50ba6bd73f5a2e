"""Probe sets: the images units are tested on."""

from coin_scale.probe.folder import ProbeImage, ProbeSet, scan_probe

__all__ = ["ProbeImage", "ProbeSet", "scan_probe"]
