"""Requirements: where a task's packages come from, and their normal form (table-driven)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bosun.agent.requirements import canonical_name, normalize, requirements_for


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        ([], []),
        (["", "   ", "# Python 3.10.4 (main) [GCC 9.4.0]", "#comment"], []),
        (["Six==1.16.0"], ["six==1.16.0"]),
        (["  tomli  ==  2.0.1  "], ["tomli==2.0.1"]),
        (["Foo_Bar.baz>=1.0,<2"], ["foo-bar-baz>=1.0,<2"]),
        (["zope.interface", "Django", "attrs"], ["attrs", "django", "zope-interface"]),
        (["requests[Socks, security]>=2"], ["requests[security,socks]>=2"]),
        (["six==1.16.0", "SIX==1.16.0", "six == 1.16.0"], ["six==1.16.0"]),
        (["numpy==1.24.0 # pinned for the model"], ["numpy==1.24.0"]),
        (["torch==2.1.0+cu118"], ["torch==2.1.0+cu118"]),
        (["pywin32==306; sys_platform == 'win32'"], ["pywin32==306; sys_platform == 'win32'"]),
        (["Pkg @ https://example.com/pkg-1.0-py3-none-any.whl"],
         ["pkg @ https://example.com/pkg-1.0-py3-none-any.whl"]),
        (["certifi @ file:///croot/certifi_1690232220950/work/certifi", "six"], ["six"]),
        (["zlib", "--extra-index-url https://example.com/simple", "-e ./lib", "abc"],
         ["--extra-index-url https://example.com/simple", "-e ./lib", "abc", "zlib"]),
        (["git+https://github.com/org/repo.git@v1#egg=repo"],
         ["git+https://github.com/org/repo.git@v1#egg=repo"]),
    ],
)
def test_normalize(lines: list[str], expected: list[str]) -> None:
    assert normalize(lines) == expected


def test_normalize_notes_dropped_local_paths() -> None:
    notes: list[str] = []
    assert normalize(["mkl-service @ file:///tmp/build/mkl", "six"], notes) == ["six"]
    assert len(notes) == 1
    assert "mkl-service @ file:///tmp/build/mkl" in notes[0]


@pytest.mark.parametrize(
    ("name", "expected"),
    [("Foo_Bar", "foo-bar"), ("zope.interface", "zope-interface"), ("a-_.b", "a-b"),
     ("SIX", "six")],
)
def test_canonical_name(name: str, expected: str) -> None:
    assert canonical_name(name) == expected


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


PYPROJECT = '[project]\nname = "p"\nversion = "0"\ndependencies = ["Six==1.16.0"]\n'


@pytest.mark.parametrize(
    ("script", "files", "kind", "lines", "where"),
    [
        ({}, {}, "none", [], None),
        ({"requirements": {"pip": "six==1.16.0\n# c\nTomli\n"}}, {}, "task",
         ["six==1.16.0", "tomli"], "."),
        ({"requirements": {"pip": ["six==1.16.0", "tomli"]}}, {"requirements.txt": "attrs"},
         "task", ["six==1.16.0", "tomli"], "."),
        ({"requirements": {"pip": ""}}, {"requirements.txt": "Attrs==23.1\n"}, "file",
         ["attrs==23.1"], "."),
        ({"requirements": {"pip": "--extra-index-url https://x/simple\n"}},
         {"requirements.txt": "attrs\n"}, "file", ["attrs"], "."),
        ({"working_dir": "sub"}, {"requirements.txt": "attrs\n", "sub/requirements.txt": "six\n"},
         "file", ["six"], "sub"),
        ({"working_dir": "sub"}, {"requirements.txt": "attrs\n", "sub/main.py": ""}, "file",
         ["attrs"], "."),
        ({}, {"pyproject.toml": PYPROJECT}, "project", ["six==1.16.0"], "."),
        ({}, {"pyproject.toml": PYPROJECT, "uv.lock": "version = 1\n"}, "project",
         ["six==1.16.0"], "."),
        ({}, {"pyproject.toml": "[tool.ruff]\nline-length = 100\n"}, "none", [], None),
        ({}, {"pyproject.toml": PYPROJECT, "requirements.txt": "attrs\n"}, "file", ["attrs"], "."),
        ({"requirements": {"pip": None, "conda": "x"}}, {}, "none", [], None),
    ],
)
def test_requirements_for(tmp_path: Path, script: dict, files: dict[str, str], kind: str,
                          lines: list[str], where: str | None) -> None:
    for name, text in files.items():
        _write(tmp_path / name, text)
    found = requirements_for(script, tmp_path)
    assert found.kind == kind
    assert found.lines == lines
    expected_dir = None if where is None else (tmp_path / where).resolve()
    assert found.project_dir == expected_dir


def test_requirements_without_repo() -> None:
    assert requirements_for({"requirements": {"pip": "six"}}, None).lines == ["six"]
    assert requirements_for({"requirements": {"pip": "six"}}, None).project_dir is None
    assert requirements_for({}, None).kind == "none"


def test_working_dir_outside_repo_is_ignored(tmp_path: Path) -> None:
    _write(tmp_path / "outside" / "requirements.txt", "evil\n")
    _write(tmp_path / "repo" / "requirements.txt", "six\n")
    found = requirements_for({"working_dir": "../outside"}, tmp_path / "repo")
    assert found.lines == ["six"]
