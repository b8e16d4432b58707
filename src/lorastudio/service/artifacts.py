"""Where finished jobs' files are downloaded from: the workspace, or an S3-compatible store.

On one box a job's files already sit in the workspace (`outputs/<job id>/`, `runs/<run>/`)
and the API serves them from there. A job's downloads are the files at the top of its folder
and those of its `embeddings/` sub-folder, named `embeddings/<file>` (a training run's
trigger embedding, `runs/<run>/embeddings/<trigger>.safetensors`); `checkpoints/` and other
sub-folders are not downloads. When several GPU boxes share one queue, the box that
answers a download is often not the box that ran the job, so workers also upload each
finished job's files to an S3-compatible bucket (AWS, MinIO, Ceph, R2...) under
`<prefix>/<job id>/<name>`, and the API serves what it does not have on disk from there.

One setting picks the store: `LORASTUDIO_ARTIFACTS_URL` (or `StudioSettings.artifacts_url`),
empty for the workspace, or `s3://bucket/prefix?endpoint_url=http://host:port&region=...`.
Credentials come from boto3's usual chain (AWS_ACCESS_KEY_ID..., ~/.aws), never the URL.
boto3 is imported only when an S3 store is used (`pip install lorastudio[s3]`).
"""

from __future__ import annotations

import mimetypes
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from lorastudio.errors import LorastudioError, NotFoundError
from lorastudio.service.names import is_plain_name
from lorastudio.service.workspace import safe_name

__all__ = [
    "Artifact",
    "ArtifactStore",
    "LocalArtifactStore",
    "S3ArtifactStore",
    "artifact_path",
    "missing_artifact",
    "open_artifact_store",
    "resolve_artifacts_url",
]

CHUNK_BYTES = 1024 * 1024


@dataclass
class Artifact:
    """One downloadable file: on local disk (`path`) or streamed from the store (`chunks()`)."""

    name: str
    size_bytes: int
    path: Path | None = None
    _body: Any = None

    @property
    def media_type(self) -> str:
        return mimetypes.guess_type(self.name)[0] or "application/octet-stream"

    def chunks(self) -> Iterator[bytes]:
        if self.path is not None:
            with open(self.path, "rb") as file:
                while chunk := file.read(CHUNK_BYTES):
                    yield chunk
            return
        try:
            yield from self._body.iter_chunks(CHUNK_BYTES)
        finally:
            self._body.close()


# Sub-folders of a job folder whose files are downloads too, named "<sub-folder>/<file>".
# `embeddings` is where a run keeps its trigger embedding (train.outputs.EMBEDDINGS_FOLDER).
ARTIFACT_SUBFOLDERS = ("embeddings",)


def artifact_path(folder: Path, name: str) -> Path | None:
    """The file of `folder` that an artifact name means (`<file>` or `embeddings/<file>`); None for any other name."""
    parts = name.split("/") if isinstance(name, str) else []
    if len(parts) == 2 and parts[0] in ARTIFACT_SUBFOLDERS and is_plain_name(parts[1]):
        return folder / parts[0] / parts[1]
    if len(parts) == 1 and is_plain_name(name):
        return folder / name
    return None


def missing_artifact(job_id: str, name: object) -> NotFoundError:
    """The one answer for a file a job does not have, or a name that is not an artifact name."""
    return NotFoundError(f"job {job_id}: has no file {str(name)[:200]!r}; list them at /api/v1/jobs/{job_id}/artifacts.")


def _local_files(folder: Path) -> dict[str, Path]:
    """A job folder's downloadable files by artifact name, sorted (see module docs)."""
    if not folder.is_dir():
        return {}
    files = {p.name: p for p in folder.iterdir() if p.is_file() and _nameable(p.name)}
    for sub in ARTIFACT_SUBFOLDERS:
        if (folder / sub).is_dir():
            files.update(
                {f"{sub}/{p.name}": p for p in (folder / sub).iterdir() if p.is_file() and _nameable(p.name)}
            )
    return dict(sorted(files.items()))


def _nameable(name: str) -> bool:
    try:
        safe_name(name)
    except LorastudioError:
        return False
    return True


class ArtifactStore:
    """A job's files by job id; `folder` is where this box wrote them (it may hold nothing)."""

    remote = False

    def publish(self, job_id: str, folder: Path) -> list[str]:
        """Make a finished job's files downloadable from any box; returns their names."""
        raise NotImplementedError

    def list(self, job_id: str, folder: Path) -> list[dict[str, Any]]:
        """`[{"name", "size_bytes"}]` sorted by name."""
        raise NotImplementedError

    def get(self, job_id: str, folder: Path, name: str) -> Artifact:
        """The file `name` of the job; raises NotFoundError."""
        raise NotImplementedError

    def describe(self) -> str:
        return "workspace"


class LocalArtifactStore(ArtifactStore):
    """The workspace itself (one box): nothing to upload, files are served from their folder."""

    def publish(self, job_id: str, folder: Path) -> list[str]:
        return list(_local_files(folder))

    def list(self, job_id: str, folder: Path) -> list[dict[str, Any]]:
        return [{"name": name, "size_bytes": p.stat().st_size} for name, p in _local_files(folder).items()]

    def get(self, job_id: str, folder: Path, name: str) -> Artifact:
        path = artifact_path(folder, name)
        if path is None or not path.is_file():
            raise missing_artifact(job_id, name)
        return Artifact(name=path.name, size_bytes=path.stat().st_size, path=path)


class S3ArtifactStore(LocalArtifactStore):
    """An S3-compatible bucket, keys `<prefix>/<job id>/<file>`; files on this box are served from disk."""

    remote = True

    def __init__(
        self, bucket: str, prefix: str = "", endpoint_url: str | None = None, region: str | None = None
    ) -> None:
        try:
            import boto3  # noqa: F401
        except ImportError:
            raise LorastudioError(
                "artifacts url s3://...: boto3 is not installed; run `pip install lorastudio[s3]`."
            ) from None
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url
        self.region = region
        self._client = None
        self._client_lock = threading.Lock()

    @property
    def client(self) -> Any:
        """The boto3 client, made on first use (it may look up credentials)."""
        with self._client_lock:  # the worker thread and API threads share one store
            if self._client is None:
                import boto3

                self._client = boto3.client("s3", endpoint_url=self.endpoint_url, region_name=self.region)
            return self._client

    def key(self, job_id: str, name: str = "") -> str:
        if name and artifact_path(Path("."), name) is None:  # a file name or embeddings/<file>, nothing else
            raise missing_artifact(job_id, name)
        parts = [self.prefix, safe_name(job_id, "job id"), name]
        return "/".join(p for p in parts if p)

    def publish(self, job_id: str, folder: Path) -> list[str]:
        names = []
        for name, path in _local_files(folder).items():
            self.client.upload_file(str(path), self.bucket, self.key(job_id, name))
            names.append(name)
        return names

    def _remote(self, job_id: str) -> dict[str, int]:
        prefix = self.key(job_id) + "/"
        sizes: dict[str, int] = {}
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                name = item["Key"][len(prefix) :]
                if name and artifact_path(Path("."), name) is not None:
                    sizes[name] = int(item["Size"])
        return sizes

    def list(self, job_id: str, folder: Path) -> list[dict[str, Any]]:
        sizes = self._remote(job_id)
        sizes.update({row["name"]: row["size_bytes"] for row in super().list(job_id, folder)})
        return [{"name": name, "size_bytes": sizes[name]} for name in sorted(sizes)]

    def get(self, job_id: str, folder: Path, name: str) -> Artifact:
        local = artifact_path(folder, name)
        if local is not None and local.is_file():
            return super().get(job_id, folder, name)
        from botocore.exceptions import ClientError

        try:
            answer = self.client.get_object(Bucket=self.bucket, Key=self.key(job_id, name))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
                raise missing_artifact(job_id, name) from None
            raise
        return Artifact(name=name.split("/")[-1], size_bytes=int(answer["ContentLength"]), _body=answer["Body"])

    def describe(self) -> str:
        where = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        return f"{where} at {self.endpoint_url}" if self.endpoint_url else where


def resolve_artifacts_url(url: str | None = None) -> str:
    """The given URL, else `LORASTUDIO_ARTIFACTS_URL`, else '' (the workspace)."""
    return (url if url is not None else os.environ.get("LORASTUDIO_ARTIFACTS_URL", "")).strip()


def open_artifact_store(url: str | None = None) -> ArtifactStore:
    """'' or `file:` -> the workspace; `s3://bucket/prefix?endpoint_url=...&region=...` -> S3."""
    url = resolve_artifacts_url(url)
    if not url or url in ("file:", "workspace"):
        return LocalArtifactStore()
    parsed = urlparse(url)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise LorastudioError(
            f"artifacts url {url!r}: not understood; use s3://bucket/prefix?endpoint_url=http://host:port "
            "or leave it empty for the workspace."
        )
    query = {key: values[-1] for key, values in parse_qs(parsed.query).items()}
    unknown = set(query) - {"endpoint_url", "region"}
    if unknown:
        raise LorastudioError(
            f"artifacts url {url!r}: unknown option(s) {', '.join(sorted(unknown))}; use endpoint_url, region."
        )
    return S3ArtifactStore(
        parsed.netloc, parsed.path, endpoint_url=query.get("endpoint_url"), region=query.get("region")
    )
