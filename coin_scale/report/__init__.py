"""Readable reports of a sweep run: a self-contained `report.html` per run."""

from coin_scale.report.html import render_report, thumbnail_data_uri, write_report

__all__ = ["render_report", "thumbnail_data_uri", "write_report"]
