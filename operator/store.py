"""Where objects live: the `Store` protocol, and `FileStore`, objects as JSON files in a folder.

Public API (stable):
- `Store` (protocol): `get(kind, name) -> dict | None`, `list(kind) -> list[dict]`,
  `create(kind, body) -> dict | None` (None: an object of that name exists -- names are
  deterministic, so it is the one we wanted), `patch_status(kind, name, status) -> dict | None`
  (JSON merge patch of `.status`; None when the object is gone), `delete(kind, name) -> bool`,
  `record_event(kind, name, type, reason, message, *, uid=None)`.
  `kube.KubeStore` implements it against the Kubernetes API; `FileStore` for `modelfleet local`.
- `FileStore(root)`: `<root>/<Kind>/<name>.json` per object, `<root>/events.jsonl` for Events.
  Writes are atomic (write a temp file, rename), so a `modelfleet local` stopped at any moment
  resumes from a consistent state. Extra: `put(kind, body)` (create or replace the whole object,
  keeping status -- how `modelfleet local` loads manifests, bumping `metadata.generation` when the
  spec changed, like the API server), `events()` and `writes` (write count, for tests).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
import uuid
from pathlib import Path
from typing import Any, Protocol

from modelfleet.api.resources import API_VERSION, BY_KIND
from modelfleet.operator.status import merge_patch


class Store(Protocol):
    def get(self, kind: str, name: str) -> dict[str, Any] | None: ...

    def list(self, kind: str) -> list[dict[str, Any]]: ...

    def create(self, kind: str, body: dict[str, Any]) -> dict[str, Any] | None: ...

    def patch_status(self, kind: str, name: str, status: dict[str, Any]) -> dict[str, Any] | None: ...

    def delete(self, kind: str, name: str) -> bool: ...

    def record_event(
        self, kind: str, name: str, type: str, reason: str, message: str, *, uid: str | None = None
    ) -> None: ...


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class FileStore:
    """A namespace's objects as files. One process at a time (what `modelfleet local` is)."""

    def __init__(self, root: str | os.PathLike[str], namespace: str = "default"):
        self.root = Path(root)
        self.namespace = namespace
        self.writes = 0

    # --- files ------------------------------------------------------------------------------

    def _path(self, kind: str, name: str) -> Path:
        if kind not in BY_KIND:
            raise ValueError(f"unknown kind {kind!r}; known: {', '.join(BY_KIND)}")
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"invalid object name {name!r}")
        return self.root / kind / f"{name}.json"

    def _write(self, path: Path, body: dict[str, Any]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
        with os.fdopen(fd, "w") as fh:
            json.dump(body, fh, indent=2, sort_keys=True)
        os.replace(tmp, path)
        self.writes += 1

    # --- the Store protocol -----------------------------------------------------------------

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        path = self._path(kind, name)
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            return None

    def list(self, kind: str) -> list[dict[str, Any]]:
        folder = self.root / kind
        if not folder.is_dir():
            return []
        out = []
        for path in sorted(folder.glob("*.json")):
            try:
                out.append(json.loads(path.read_text()))
            except FileNotFoundError:  # deleted between glob and read
                continue
        return out

    def create(self, kind: str, body: dict[str, Any]) -> dict[str, Any] | None:
        name = body["metadata"]["name"]
        path = self._path(kind, name)
        if path.exists():
            return None
        obj = json.loads(json.dumps(body))
        meta = obj.setdefault("metadata", {})
        meta.setdefault("namespace", self.namespace)
        meta["generation"] = 1
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", _now())
        obj.setdefault("apiVersion", API_VERSION)
        obj.setdefault("kind", kind)
        # As with the status subresource, a create never sets status.
        obj.pop("status", None)
        self._write(path, obj)
        return obj

    def patch_status(self, kind: str, name: str, status: dict[str, Any]) -> dict[str, Any] | None:
        obj = self.get(kind, name)
        if obj is None:
            return None
        obj["status"] = merge_patch(obj.get("status"), status)
        self._write(self._path(kind, name), obj)
        return obj

    def delete(self, kind: str, name: str) -> bool:
        try:
            self._path(kind, name).unlink()
        except FileNotFoundError:
            return False
        self.writes += 1
        return True

    def record_event(
        self, kind: str, name: str, type: str, reason: str, message: str, *, uid: str | None = None
    ) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        line = {"time": _now(), "kind": kind, "name": name, "type": type, "reason": reason, "message": message}
        with open(self.root / "events.jsonl", "a") as fh:
            fh.write(json.dumps(line) + "\n")
        self.writes += 1

    # --- extras for `modelfleet local` ------------------------------------------------------

    def put(self, kind: str, body: dict[str, Any]) -> dict[str, Any]:
        """Create or replace a user's object (spec, labels), keeping its status and generation.

        The generation is bumped only when the spec changed, as the API server does, so the
        planner's `observedGeneration` check and its no-write-when-unchanged rule behave as in a
        cluster.
        """
        name = body["metadata"]["name"]
        current = self.get(kind, name)
        if current is None:
            created = self.create(kind, body)
            assert created is not None
            return created
        obj = json.loads(json.dumps(body))
        obj.pop("status", None)
        meta = obj.setdefault("metadata", {})
        old_meta = current.get("metadata", {})
        for key in ("uid", "creationTimestamp", "namespace"):
            if key in old_meta:
                meta[key] = old_meta[key]
        generation = int(old_meta.get("generation") or 1)
        meta["generation"] = generation + 1 if obj.get("spec") != current.get("spec") else generation
        obj.setdefault("apiVersion", API_VERSION)
        obj.setdefault("kind", kind)
        if current.get("status") is not None:
            obj["status"] = current["status"]
        if obj != current:
            self._write(self._path(kind, name), obj)
        return obj

    def events(self) -> list[dict[str, Any]]:
        path = self.root / "events.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
