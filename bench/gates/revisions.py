"""The revisions a gate compares: a commit checked out into a temporary git worktree, or the working tree.

Nothing is installed for a revision: the gate runs each one in the current environment with the
revision's own source tree first on ``sys.path`` (:mod:`bench.gates.runner`). Only what the tree
imports from the environment (torch, numpy, ...) is shared.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from bench.errors import CLIError

WORKING_TREE = "working tree"


@dataclass(frozen=True)
class Revision:
    """``label`` (base or head), what the user asked for (``spec``), the commit, and the source tree."""

    label: str
    spec: str
    commit: str
    root: Path
    dirty: bool = False

    def describe(self) -> str:
        """e.g. ``base (origin/main 1a2b3c4d5e)`` or ``head (working tree on 1a2b3c4d5e, modified)``."""
        if self.spec == WORKING_TREE:
            return f"{self.label} ({WORKING_TREE} on {self.commit[:10]}{', modified' if self.dirty else ''})"
        return f"{self.label} ({self.spec} {self.commit[:10]})"

    def to_dict(self) -> dict[str, object]:
        return {"rev": self.spec, "commit": self.commit, "dirty": self.dirty}


def git(repo: Path, *args: str) -> str:
    """Run ``git -C repo args``; its stdout, stripped. A failure is a one-line :class:`CLIError`."""
    try:
        proc = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
    except FileNotFoundError:
        raise CLIError("git is not installed: the gate checks revisions out with git worktree") from None
    if proc.returncode != 0:
        message = " ".join(proc.stderr.split()) or f"exit {proc.returncode}"
        raise CLIError(f"git {' '.join(args)}: {message[:300]}")
    return proc.stdout.strip()


def repo_root(start: Path) -> Path:
    """The top of the git repository that holds ``start``."""
    if not Path(start).is_dir():
        raise CLIError(f"--repo {start}: no such folder")
    try:
        return Path(git(Path(start), "rev-parse", "--show-toplevel"))
    except CLIError:
        raise CLIError(f"{start} is not inside a git repository (the gate compares two of its revisions)") from None


def resolve_commit(repo: Path, spec: str, option: str) -> str:
    """The full commit id ``spec`` names in ``repo``; an unknown revision is a one-line error naming it."""
    try:
        return git(repo, "rev-parse", "--verify", "--quiet", f"{spec}^{{commit}}")
    except CLIError:
        raise CLIError(f"{option} {spec}: not a commit of {repo} (in CI, fetch it first: "
                       f"actions/checkout with fetch-depth: 0, or git fetch origin main)") from None


def working_tree(repo: Path, label: str = "head") -> Revision:
    """The working tree as it is, uncommitted changes included."""
    commit = git(repo, "rev-parse", "--verify", "HEAD")
    dirty = bool(git(repo, "status", "--porcelain", "--untracked-files=no"))
    return Revision(label, WORKING_TREE, commit, Path(repo), dirty)


@contextlib.contextmanager
def checkout(repo: Path, spec: str, label: str, option: str) -> Iterator[Revision]:
    """``spec`` checked out (detached) into a temporary git worktree, removed again on exit."""
    commit = resolve_commit(repo, spec, option)
    folder = Path(tempfile.mkdtemp(prefix=f"cvae-bench-gate-{label}-"))
    tree = folder / "tree"
    try:
        git(repo, "worktree", "add", "--detach", "--quiet", str(tree), commit)
        yield Revision(label, spec, commit, tree)
    finally:
        if tree.exists():
            with contextlib.suppress(CLIError):
                git(repo, "worktree", "remove", "--force", str(tree))
        shutil.rmtree(folder, ignore_errors=True)
        with contextlib.suppress(CLIError):
            git(repo, "worktree", "prune")
