"""Exporting a system for TensorFlow Serving: one SavedModel whose per-task signatures share one
set of variables, with warm-up requests and a model server config (see `exporter`)."""

from mtsys.export.exporter import ExportResult
from mtsys.export.exporter import export
from mtsys.export.exporter import format_summary
from mtsys.export.exporter import select_tasks

__all__ = ["ExportResult", "export", "format_summary", "select_tasks"]
