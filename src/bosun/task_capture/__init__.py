"""Turning a local script or checkout into a task's ``script`` section: the git state (remote,
branch, commit, uncommitted diff), the requirements, and the entry point."""

from bosun.task_capture.git_state import GitError, GitState, capture, repo_root
from bosun.task_capture.requirements_capture import CapturedRequirements, capture_requirements
from bosun.task_capture.script_task import CaptureError, ScriptSpec, TaskScript, build_script

__all__ = [
    "CaptureError",
    "CapturedRequirements",
    "GitError",
    "GitState",
    "ScriptSpec",
    "TaskScript",
    "build_script",
    "capture",
    "capture_requirements",
    "repo_root",
]
