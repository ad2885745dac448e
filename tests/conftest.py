"""Shared fixtures for the whole suite."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository root (where pyproject.toml lives)."""
    return REPO_ROOT


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    """``tests/artifacts/``: a git-ignored folder for logs and files worth
    keeping after a run (server logs, rendered pages, plots)."""
    path = REPO_ROOT / "tests" / "artifacts"
    path.mkdir(parents=True, exist_ok=True)
    return path
