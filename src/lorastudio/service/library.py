"""The workspace library: models, LoRAs and generated images, recorded in studio.db.

SQLite by default (embedded, no server). Files stay the source of truth: the tables are
an index that `refresh` rebuilds from the folders, so a user can copy files in by hand.
"""

from __future__ import annotations

import json
import sqlite3
import time
from contextlib import closing
from pathlib import Path
from typing import Any

from lorastudio.service.workspace import Workspace

__all__ = ["Library"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS library_models (
    name TEXT PRIMARY KEY, path TEXT NOT NULL, family TEXT, sha256 TEXT, size_bytes INTEGER,
    kind TEXT, added_at REAL, info TEXT
);
CREATE TABLE IF NOT EXISTS library_loras (
    name TEXT PRIMARY KEY, path TEXT NOT NULL, family TEXT, sha256 TEXT, trigger TEXT, base_model TEXT,
    added_at REAL, info TEXT
);
CREATE TABLE IF NOT EXISTS library_outputs (
    path TEXT PRIMARY KEY, seed INTEGER, model TEXT, model_hash TEXT, prompt TEXT, created_at REAL, recipe TEXT
);
"""


class Library:
    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace
        with closing(self._connect()) as db, db:
            db.executescript(_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.workspace.db_path, timeout=30)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode=WAL")
        return db

    # -- models ---------------------------------------------------------------------------
    def add_model(
        self,
        name: str,
        path: Path,
        family: str,
        sha256: str,
        size_bytes: int,
        kind: str,
        info: dict | None = None,
    ) -> None:
        with closing(self._connect()) as db, db:
            db.execute(
                "INSERT OR REPLACE INTO library_models VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (name, str(path), family, sha256, size_bytes, kind, time.time(), json.dumps(info or {})),
            )

    def models(self) -> list[dict[str, Any]]:
        with closing(self._connect()) as db:
            return [dict(r) for r in db.execute("SELECT * FROM library_models ORDER BY name")]

    def model(self, name: str) -> dict[str, Any] | None:
        with closing(self._connect()) as db:
            row = db.execute("SELECT * FROM library_models WHERE name = ?", (name,)).fetchone()
            return dict(row) if row else None

    def model_by_hash(self, short_hash: str) -> dict[str, Any] | None:
        """The model whose SHA-256 starts with `short_hash`, or that was converted from a .ckpt whose
        SHA-256 does (A1111 wrote the .ckpt's hash into the images it made with it)."""
        short = short_hash.lower()
        with closing(self._connect()) as db:
            row = db.execute("SELECT * FROM library_models WHERE sha256 LIKE ?", (short + "%",)).fetchone()
            if row:
                return dict(row)
            rows = db.execute("SELECT * FROM library_models ORDER BY name").fetchall()
        converted = (r for r in rows if json.loads(r["info"] or "{}").get("original_sha256", "").startswith(short))
        return next((dict(r) for r in converted), None)

    def remove_model(self, name: str) -> None:
        with closing(self._connect()) as db, db:
            db.execute("DELETE FROM library_models WHERE name = ?", (name,))

    def rename_model(self, name: str, new_name: str, path: Path) -> None:
        with closing(self._connect()) as db, db:
            db.execute("UPDATE library_models SET name = ?, path = ? WHERE name = ?", (new_name, str(path), name))

    # -- LoRAs ----------------------------------------------------------------------------
    def add_lora(
        self,
        name: str,
        path: Path,
        family: str,
        sha256: str,
        trigger: str | None = None,
        base_model: str | None = None,
        info: dict | None = None,
    ) -> None:
        with closing(self._connect()) as db, db:
            db.execute(
                "INSERT OR REPLACE INTO library_loras VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (name, str(path), family, sha256, trigger, base_model, time.time(), json.dumps(info or {})),
            )

    def loras(self) -> list[dict[str, Any]]:
        with closing(self._connect()) as db:
            return [dict(r) for r in db.execute("SELECT * FROM library_loras ORDER BY name")]

    def remove_lora(self, name: str) -> None:
        """Forget a LoRA (its run, trigger, samples): a file copied in later under this name starts clean."""
        with closing(self._connect()) as db, db:
            db.execute("DELETE FROM library_loras WHERE name = ?", (name,))

    def rename_lora(self, name: str, new_name: str, path: Path) -> None:
        """Keep a renamed LoRA's run, trigger and samples under its new name."""
        with closing(self._connect()) as db, db:
            db.execute("UPDATE library_loras SET name = ?, path = ? WHERE name = ?", (new_name, str(path), name))

    # -- outputs --------------------------------------------------------------------------
    def add_output(
        self, path: Path, seed: int, model: str, model_hash: str, prompt: str, recipe: dict
    ) -> None:
        with closing(self._connect()) as db, db:
            db.execute(
                "INSERT OR REPLACE INTO library_outputs VALUES (?, ?, ?, ?, ?, ?, ?)",
                (str(path), seed, model, model_hash, prompt, time.time(), json.dumps(recipe, default=str)),
            )

    def outputs(self, limit: int = 100) -> list[dict[str, Any]]:
        with closing(self._connect()) as db:
            rows = db.execute("SELECT * FROM library_outputs ORDER BY created_at DESC LIMIT ?", (limit,))
            return [dict(r) for r in rows]
