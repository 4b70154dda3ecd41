"""Frees, before interpreter teardown, the frames that libraries' stored import errors keep alive.

google-cloud-bigquery, which `import apache_beam` imports, keeps the ImportError of each optional
dependency it lacks (pandas-gbq, db-dtypes) in a module global, to name it in a later error. The
error's traceback holds the frame that raised it, and through `f_back` every frame that was on the
stack when Beam was first imported, with their locals: whatever the caller of that first import
built afterwards (a Beam pipeline, TFX and metadata protos) stays alive until the interpreter tears
its modules down. On protobuf 6 (the TFX 1.21 stack) the upb messages among them are then freed
after upb's module state is gone, and the process dies with a segmentation fault at exit, after its
work is done (observed: the in-process tf.Transform analysis of models/pretrained/export_pretrained.py
on TFX 1.21; protobuf 4 on TFX 1.16 keeps the same objects and exits cleanly).

`release_at_exit()` registers, once per process, an exit handler that drops those tracebacks (the
errors and their messages stay) while every module is still alive, so the frames and what they
hold are freed then. Each package that may import Beam calls it in its `__init__`, beside
`legacy_keras.enable()`. Standard library only: it never imports the libraries it looks at.
"""
import atexit
import gc
import sys
from typing import List

# Modules that store an ImportError in a global named `*_import_exception`.
MODULES = ("google.cloud.bigquery._pandas_helpers", "google.cloud.bigquery._pyarrow_helpers")
SUFFIX = "_import_exception"

_registered = False


def release() -> List[str]:
    """Drops the traceback of every stored import error of MODULES that are loaded, then collects
    the cycles that held; returns "module.name" of each error released."""
    released = []
    for name in MODULES:
        module = sys.modules.get(name)
        for attr, value in list(vars(module).items()) if module is not None else ():
            if attr.endswith(SUFFIX) and isinstance(value, BaseException):
                error, seen = value, set()
                while error is not None and id(error) not in seen:   # its causes hold frames too
                    seen.add(id(error))
                    error.__traceback__ = None
                    error = error.__cause__ or error.__context__
                released.append(f"{name}.{attr}")
    gc.collect()
    return released


def release_at_exit() -> None:
    """Registers `release` to run at interpreter exit (once per process)."""
    global _registered
    if not _registered:
        atexit.register(release)
        _registered = True
