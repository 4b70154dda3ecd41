"""The shape of the codebase a newcomer meets (issue 21): a README that is a landing page, thin
runners, no module a reader has to page through, and a docs index that matches docs/. Function
complexity is ruff's (ruff.toml, C90), run by `make test` before pytest."""
import os
import re

from tests.conftest import REPO_ROOT

MAX_MODULE_LINES = 450
MAX_RUNNER_LINES = 150
MAX_README_LINES = 150


def _lines(path):
    with open(os.path.join(REPO_ROOT, path)) as f:
        return f.read().count("\n")


SKIPPED_DIRS = {"tests", "runs", "data", "build", "node_modules"}


def _project_python_files():
    """The project's Python files outside the tests (no venvs, caches or generated data)."""
    found = []
    for folder, dirs, names in os.walk(REPO_ROOT):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in SKIPPED_DIRS
                   and not d.endswith(".egg-info")]
        found += [os.path.relpath(os.path.join(folder, name), REPO_ROOT) for name in names
                  if name.endswith(".py")]
    return found


def test_no_module_outside_the_tests_is_longer_than_450_lines():
    files = _project_python_files()
    assert len(files) > 50      # the listing worked
    long = {path: _lines(path) for path in files if _lines(path) > MAX_MODULE_LINES}
    assert not long, long


def test_the_runners_are_thin():
    for runner in ("local_runner.py", "kubeflow_runner.py"):
        assert _lines(runner) <= MAX_RUNNER_LINES, runner


def test_the_readme_is_a_landing_page_with_the_two_commands_and_an_index_of_every_docs_page():
    with open(os.path.join(REPO_ROOT, "README.md")) as f:
        readme = f.read()
    assert readme.count("\n") <= MAX_README_LINES
    commands = re.findall(r"^make (\w+)", readme, re.M)
    assert commands == ["demo", "test"], commands
    linked = set(re.findall(r"\]\((docs/[\w.-]+\.md)\)", readme))
    pages = {f"docs/{name}" for name in os.listdir(os.path.join(REPO_ROOT, "docs"))
             if name.endswith(".md")}
    assert pages <= linked, sorted(pages - linked)
    assert all(os.path.exists(os.path.join(REPO_ROOT, page)) for page in linked)
