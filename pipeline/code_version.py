"""Code fingerprints for TFX's cache.

TFX decides a cache hit from a component's inputs and execution properties, not from its code: a
changed evaluator would return its cached verdict, a changed loss its cached model. Every component
whose code is ours therefore gets `code_version`, a hash of the Python files its entry module
imports from this repository, followed transitively (sub-packages, function-level imports and each
package's `__init__` included). A change anywhere in that closure is a cache miss; a change in
code the component never imports is not.
"""
from __future__ import annotations

import ast
import hashlib
import os
from typing import Iterable, Iterator, List, Optional, Set, Tuple

from pipeline.configs import REPO_ROOT


def _module_file(module: str, root: str) -> Optional[str]:
    path = os.path.join(root, *module.split("."))
    if os.path.isfile(path + ".py"):
        return path + ".py"
    if os.path.isfile(os.path.join(path, "__init__.py")):
        return os.path.join(path, "__init__.py")
    return None


def _package_inits(module: str, root: str) -> List[str]:
    parts = module.split(".")
    inits = [os.path.join(root, *parts[:i], "__init__.py") for i in range(1, len(parts))]
    return [path for path in inits if os.path.isfile(path)]


def imported_modules(source: str, module: str, is_package: bool = False) -> Iterator[Tuple[int, str]]:
    """(line, module) for every module an import statement in `source` may refer to, at any depth
    (function-level imports too), absolute and relative. `module` is the source's dotted name;
    `is_package` says it is a package's `__init__` (relative imports then start from it)."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            yield node.lineno, base
            # `from package import module` names a module, `from module import name` does not:
            # both are yielded; the caller keeps what it can resolve.
            yield from ((node.lineno, f"{base}.{alias.name}") for alias in node.names)


def _imported_modules(path: str, module: str) -> Iterable[str]:
    with open(path, "rb") as f:
        source = f.read()
    return (name for _, name in imported_modules(source, module, path.endswith("__init__.py")))


def module_closure(*modules: str, root: str = REPO_ROOT) -> List[str]:
    """The repository files of `modules` and of everything they import from the repository."""
    seen: Set[str] = set()
    files: Set[str] = set()
    pending = list(modules)
    while pending:
        module = pending.pop()
        if module in seen:
            continue
        seen.add(module)
        path = _module_file(module, root)
        if path is None:
            continue
        files.add(path)
        files.update(_package_inits(module, root))
        pending.extend(_imported_modules(path, module))
        for init in _package_inits(module, root):
            package = os.path.relpath(os.path.dirname(init), root).replace(os.sep, ".")
            pending.extend(_imported_modules(init, package))
    missing = [m for m in modules if _module_file(m, root) is None]
    if missing:
        raise ValueError(f"no module {missing} under {root}")
    return sorted(files)


def code_fingerprint(*modules: str, root: str = REPO_ROOT) -> str:
    """16 hex digits of SHA-256 over the closure's relative paths and contents."""
    digest = hashlib.sha256()
    for path in module_closure(*modules, root=root):
        with open(path, "rb") as f:
            digest.update(os.path.relpath(path, root).encode() + b"\0" + f.read() + b"\0")
    return digest.hexdigest()[:16]
