"""core/stored_import_errors.py: the frames that google-cloud-bigquery's stored ImportErrors keep
alive after Beam's first import are freed, while the errors stay. Each case runs in a fresh
interpreter, where the import really is the first one. (The crash at exit this prevents depends on
teardown order; tests/test_pretrained_alignment.py's in-process Transform run showed it on the TFX
1.21 stack.)"""
import subprocess
import sys
import textwrap

from tests.conftest import REPO_ROOT

# A function that imports Beam for the first time, then keeps a sentinel object and a repeated
# protobuf field (a upb container on protobuf 6) in its locals.
FIRST_IMPORT = textwrap.dedent("""
    import gc, weakref

    class Sentinel:
        pass

    def first_beam_import():
        import apache_beam  # noqa: F401
        from tensorflow_metadata.proto.v0 import schema_pb2
        schema = schema_pb2.Schema()
        schema.feature.add(name="x")
        features = schema.feature
        sentinel = Sentinel()
        return weakref.ref(sentinel), len(features)

    sentinel, _ = first_beam_import()
    gc.collect()
""")


def run(script):
    return subprocess.run([sys.executable, "-c", FIRST_IMPORT + textwrap.dedent(script)],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)


def test_the_frames_of_beams_first_import_outlive_it_until_released():
    result = run("""
        from core import stored_import_errors
        import google.cloud.bigquery._pandas_helpers as helpers
        print("alive before:", sentinel() is not None)
        names = stored_import_errors.release()
        print("released:", ",".join(names))
        print("alive after:", sentinel() is not None)
        # The errors themselves (their messages) stay for bigquery's own later error.
        print("message kept:", all(str(getattr(helpers, n.rsplit(".", 1)[1])) for n in names
                                   if n.startswith(helpers.__name__)))
    """)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = dict(line.split(": ", 1) for line in result.stdout.splitlines() if ": " in line)
    assert lines["alive before"] == "True"
    assert lines["released"], "no stored import error found: the leak this module works around"
    assert all(n.rsplit(".", 1)[1].endswith("_import_exception") for n in lines["released"].split(","))
    assert lines["alive after"] == "False"
    assert lines["message kept"] == "True"


def test_release_at_exit_registers_one_exit_handler_per_process():
    result = run("""
        import atexit
        from core import stored_import_errors
        before = atexit._ncallbacks()
        stored_import_errors.release_at_exit()
        stored_import_errors.release_at_exit()   # once per process, however often called
        print("handlers added:", atexit._ncallbacks() - before)
    """)
    assert result.returncode == 0, (result.returncode, result.stderr[-3000:])
    assert "handlers added: 1\n" in result.stdout


def test_every_package_that_may_import_beam_registers_the_release():
    import os

    for package in ("models", "components", "pipeline", "tools", "benchmarks"):
        with open(os.path.join(REPO_ROOT, package, "__init__.py")) as f:
            assert "stored_import_errors.release_at_exit()\n" in f.read(), package
