"""A real git repository in a test's folder, made with the git CLI."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

_IDENTITY = {"GIT_AUTHOR_NAME": "askflow tests", "GIT_AUTHOR_EMAIL": "tests@example.org",
             "GIT_COMMITTER_NAME": "askflow tests", "GIT_COMMITTER_EMAIL": "tests@example.org"}


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True,
                          env={**os.environ, **_IDENTITY}).stdout.strip()


def commit(repo: Path, message: str) -> str:
    """Commit everything in ``repo`` (made a repository on ``main`` first if it is not one); the new commit's id."""
    if not (repo / ".git").exists():
        git(repo, "init", "--quiet", "--initial-branch", "main")
    git(repo, "add", "--all")
    git(repo, "commit", "--quiet", "-m", message)
    return git(repo, "rev-parse", "HEAD")
