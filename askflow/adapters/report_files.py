"""Where rendered reports are written: a folder (local runs) or a GCS bucket (``gs://``), one object per name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from askflow.ports import ReportFiles


class FolderReportFiles(ReportFiles):
    def __init__(self, folder: Path) -> None:
        self._folder = folder

    def write(self, name: str, data: bytes, *, content_type: str) -> str:
        path = self._folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(path.suffix + ".partial")
        partial.write_bytes(data)
        partial.replace(path)  # a reader never sees half a report
        return str(path)


class GcsReportFiles(ReportFiles):
    def __init__(self, *, client: Any, bucket: str, prefix: str = "insights/") -> None:
        self._client = client
        self._bucket = bucket
        self._prefix = prefix

    def write(self, name: str, data: bytes, *, content_type: str) -> str:
        blob = self._client.bucket(self._bucket).blob(self._prefix + name)
        blob.upload_from_string(data, content_type=content_type)
        return f"gs://{self._bucket}/{self._prefix}{name}"
