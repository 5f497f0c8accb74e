"""GcsLocation: documentation files under a GCS prefix (``gs://bucket/prefix/``), read with google-cloud-storage.
``STORAGE_EMULATOR_HOST`` points the client (built by ``bootstrap``) at a fake server."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from askflow.domain.errors import ConfigurationError, InvalidInput
from askflow.domain.model import Document
from askflow.ingest.sources.files import is_doc_path, parse_document


@dataclass
class GcsLocation:
    """:param storage: gives the ``google.cloud.storage.Client`` when the location is first read."""

    storage: Callable[[], Any]
    bucket: str
    prefix: str = ""  # empty, or a folder ending in "/"

    @classmethod
    def parse(cls, spec: str, *, storage: Callable[[], Any]) -> GcsLocation:
        bucket, _, prefix = spec.removeprefix("gs://").partition("/")
        if not bucket:
            raise InvalidInput(f"{spec}: no bucket named (gs://BUCKET/PREFIX)")
        return cls(storage, bucket, prefix.strip("/") + "/" if prefix.strip("/") else "")

    @property
    def public(self) -> str:
        return self.pin()

    def pin(self) -> str:
        return f"gs://{self.bucket}/{self.prefix}"

    def list(self) -> list[str]:
        from google.api_core.exceptions import Forbidden, NotFound, Unauthorized
        from google.auth.exceptions import GoogleAuthError

        try:
            blobs = self.storage().list_blobs(self.bucket, prefix=self.prefix)
            names = [blob.name for blob in blobs]
        except NotFound as error:
            raise InvalidInput(f"no such bucket: gs://{self.bucket}") from error
        except (Forbidden, Unauthorized, GoogleAuthError) as error:  # expired, revoked or not allowed
            raise ConfigurationError(f"gs://{self.bucket}: the Google credentials were refused ({error}); run "
                                     "`gcloud auth application-default login` or use an account with access") from error
        return sorted(r for name in names if is_doc_path(r := name[len(self.prefix):]))

    def load(self, relative: str, *, source: str, base_url: str | None) -> Document:
        name = f"{self.prefix}{relative}"
        blob = self.storage().bucket(self.bucket).blob(name)
        try:
            raw = blob.download_as_bytes().decode("utf-8")
        except UnicodeDecodeError as error:
            raise InvalidInput(f"gs://{self.bucket}/{name}: not UTF-8 text") from error
        url = f"{base_url.rstrip('/')}/{relative}" if base_url else f"gs://{self.bucket}/{name}"
        generation = getattr(blob, "generation", None)  # what the download's response said of the object
        return dataclasses.replace(parse_document(relative, raw, source=source, url=url), location=self.public,
                                   version=f"generation {generation}" if generation else "")
