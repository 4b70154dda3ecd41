"""Security properties: nothing outside the image root is opened, no code runs from input data,
temporary files are cleaned up."""
import json
import os
import re
import tempfile

import pytest

from components.face_example_gen import beam_ingest
from core.records import IngestOptions, Rejected
from tests import image_factory as images
from tests.conftest import REPO_ROOT

SOURCE_DIRS = ("components", "models", "pipeline", "tools", "generate_tfrecord", "benchmarks")
FORBIDDEN = re.compile(r"\b(eval|exec)\(|pickle\.loads?\(|marshal\.loads?\(|yaml\.load\(|"
                       r"\bshelve\b|__import__\(|subprocess|os\.system\(")


def project_sources():
    for top in SOURCE_DIRS:
        for folder, _, files in os.walk(os.path.join(REPO_ROOT, top)):
            for name in files:
                if name.endswith(".py"):
                    yield os.path.join(folder, name)
    yield os.path.join(REPO_ROOT, "local_runner.py")
    yield os.path.join(REPO_ROOT, "kubeflow_runner.py")


def test_no_eval_exec_pickle_or_shell_in_project_code():
    offenders = []
    for path in project_sources():
        with open(path) as f:
            for number, line in enumerate(f, 1):
                if FORBIDDEN.search(line.split("#")[0]):
                    offenders.append(f"{os.path.relpath(path, REPO_ROOT)}:{number}: {line.strip()}")
    # Separate processes on purpose, never with a shell and never on input data: benchmarks time
    # the CLI; the pretrained networks' setup runs the pinned `npm pack` and their parity reference
    # runs the package's own JavaScript under Node; the real-photo review runs the local runner as a
    # command (a tool never imports a runner).
    allowed = ("benchmarks/", "models/pretrained/fetch.py", "models/pretrained/reference.py",
               "tools/review_pretrained.py")
    offenders = [o for o in offenders if not (o.startswith(allowed) and "subprocess" in o)]
    assert offenders == []


def test_allowed_subprocesses_never_use_a_shell():
    for path in project_sources():
        with open(path) as f:
            text = f.read()
        if "subprocess" in text:
            assert "shell=True" not in text, path


@pytest.mark.parametrize("key", ["../secret.jpg", "a/../../secret.jpg", "/tmp/secret.jpg",
                                 "link/secret.jpg", "file:///tmp/secret.jpg"])
def test_escaping_keys_open_nothing_outside_the_root(tmp_path, monkeypatch, key):
    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    (tmp_path / "secret.jpg").write_bytes(images.jpeg())
    os.symlink(tmp_path, root / "link")
    opened = []
    real_open = beam_ingest.FileSystems.open

    def recording_open(path, *args, **kwargs):
        opened.append(path)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(beam_ingest.FileSystems, "open", recording_open)
    with pytest.raises(Rejected) as info:
        beam_ingest.check_record(str(root), key, {"label": 0, "x1": 1, "y1": 1, "x2": 9, "y2": 9},
                                 IngestOptions(), local_root=True)
    assert info.value.reason == "path_escape"
    assert opened == []


def test_trainer_scratch_files_are_removed(tmp_path, monkeypatch):
    """Warm-start and export scratch space lives in a TemporaryDirectory that is gone afterwards."""
    import tensorflow as tf

    from models import trainer
    from models.face_model import ModelConfig, build_embedding_model

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    model = build_embedding_model(ModelConfig(loss="AngularMargin", backbone="small_cnn",
                                              image_size=32, embedding_size=8))
    weights = tmp_path / "model" / trainer.WARMSTART_DIR
    weights.mkdir(parents=True)
    model.save_weights(str(weights / trainer.WARMSTART_WEIGHTS))
    assert "small_cnn" in trainer.warm_start(model, str(tmp_path / "model" / "Format-Serving"))
    # TensorFlow's autograph keeps generated sources there until the process exits; ours are gone.
    assert [f for f in os.listdir(scratch) if not f.startswith("__autograph_generated_file")] == []
    assert tf.io.gfile.exists(str(weights / trainer.WARMSTART_WEIGHTS))


@pytest.mark.parametrize("key,reason", [("../secret.jpg", "path_escape"),
                                        ("/tmp/secret.jpg", "path_escape"),
                                        ("link/secret.jpg", "path_escape"),
                                        ("bomb.png", "image_too_large")])
def test_tools_read_lists_with_the_ingest_checks(tmp_path, key, reason):
    """export_tflite / embedding_projector / loss_quality read images via face_lists: a list
    that never went through the pipeline gets the same path and decompression-bomb checks."""
    from tools import face_lists

    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "secret.jpg").write_bytes(images.jpeg())
    (root / "bomb.png").write_bytes(images.png_bomb())
    (root / "ok.jpg").write_bytes(images.jpeg())
    os.symlink(tmp_path, root / "link")
    listing = {name: {"label": 0, "x1": 1, "y1": 1, "x2": 9, "y2": 9} for name in ("ok.jpg", key)}
    assert len(face_lists.read_images(listing, ["ok.jpg"], str(root))) == 1
    with pytest.raises(ValueError, match=f"{re.escape(key)}.*{reason}"):
        face_lists.read_images(listing, ["ok.jpg", key], str(root))


def test_landmark_converter_rejects_symlinks_leaving_the_image_root(tmp_path):
    from core.landmark_files import conversion, lines

    root = tmp_path / "root"
    (root / "African").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "m.0abc_0001.jpg").write_bytes(images.jpeg(200, 200))
    os.symlink(tmp_path / "outside", root / "African" / "m.0abc")
    face = lines.Face("African/m.0abc/m.0abc_0001.jpg", "m.0abc", (10, 10, 90, 90),
                      "African_lmk.txt", 1, "line")
    with pytest.raises(lines.LineError) as info:
        conversion.check_image(face, str(root), clip=False)
    assert info.value.reason == "path_escape"


def test_tools_never_open_a_named_pipe_in_a_list(tmp_path):
    """A FIFO under the image root: the tools' list reader names it, and opens nothing."""
    from tests.test_ingest_records import fifo_watchdog
    from tools import face_lists

    root = tmp_path / "root"
    root.mkdir()
    (root / "ok.jpg").write_bytes(images.jpeg())
    os.mkfifo(root / "pipe.jpg")
    listing = {name: {"label": 0, "x1": 1, "y1": 1, "x2": 9, "y2": 9} for name in ("ok.jpg",
                                                                                 "pipe.jpg")}
    with fifo_watchdog([root / "pipe.jpg"]):
        with pytest.raises(ValueError, match="'pipe.jpg'.*not_a_regular_file"):
            face_lists.read_images(listing, ["ok.jpg", "pipe.jpg"], str(root))


@pytest.mark.parametrize("value,reason", [
    ({"label": "0", "x1": 1, "y1": 1, "x2": 9, "y2": 9}, "bad_label"),
    ({"label": 0, "x1": 9, "y1": 1, "x2": 1, "y2": 9}, "bad_box"),
    ({"label": 0, "x1": 1, "y1": 1, "x2": 90, "y2": 9}, "box_outside_image"),   # 64x48 image
])
def test_tools_reject_records_as_ingest_does(tmp_path, value, reason):
    """The tools run ingest's whole check chain, fields and box included, not a subset of it."""
    from tools import face_lists

    (tmp_path / "x.jpg").write_bytes(images.jpeg(64, 48))
    with pytest.raises(Rejected) as info:
        beam_ingest.check_record(str(tmp_path), "x.jpg", value, IngestOptions(), local_root=True)
    assert info.value.reason == reason
    with pytest.raises(ValueError, match=f"'x.jpg'.*{reason}"):
        face_lists.read_images({"x.jpg": value}, ["x.jpg"], str(tmp_path))


@pytest.mark.parametrize("name", ["list.json", "list.jsonl"])
def test_tools_read_a_list_starting_with_a_byte_order_mark(tmp_path, name):
    from tools import face_lists

    listing = {"g/a.jpg": {"label": 0, "x1": 1, "y1": 2, "x2": 9, "y2": 9},
               "g/b.jpg": {"label": 1, "x1": 3, "y1": 4, "x2": 19, "y2": 29}}
    if name.endswith(".jsonl"):
        text = "".join(json.dumps({"path": k, **v}) + "\n" for k, v in listing.items())
    else:
        text = json.dumps(listing, indent=1)
    (tmp_path / name).write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    assert list(face_lists.read_face_list(str(tmp_path / name)).items()) == list(listing.items())


@pytest.mark.parametrize("text,message", [
    ('{"a.jpg": {"label": 0, "x1": 1, "y1": 1, "x2": 9, "y2": 9}, '
     '"a.jpg": {"label": 1, "x1": 1, "y1": 1, "x2": 9, "y2": 9}}', "'a.jpg'.*duplicate_key"),
    ('[{"a.jpg": {"label": 0}}]', "bad_top_level"),
    ('{"a.jpg": {"label": 0, "x1": 1', "invalid_json"),
    ('{"a.jpg": {"label": 0}}', "'a.jpg'.*has no x1, y1, x2, y2"),
])
def test_tools_name_the_list_and_the_reason_of_a_bad_list(tmp_path, text, message):
    from tools import face_lists

    (tmp_path / "l.json").write_text(text)
    with pytest.raises(ValueError, match=message) as info:
        face_lists.read_face_list(str(tmp_path / "l.json"))
    assert str(tmp_path / "l.json") in str(info.value)


def test_landmark_converter_names_a_named_pipe_and_does_not_open_it(tmp_path):
    from core.landmark_files import conversion, lines
    from tests.test_ingest_records import fifo_watchdog

    (tmp_path / "African" / "m.0abc").mkdir(parents=True)
    fifo = tmp_path / "African" / "m.0abc" / "m.0abc_0001.jpg"
    os.mkfifo(fifo)
    face = lines.Face("African/m.0abc/m.0abc_0001.jpg", "m.0abc", (10, 10, 90, 90),
                      "African_lmk.txt", 1, "line")
    with fifo_watchdog([fifo]), pytest.raises(lines.LineError) as info:
        conversion.check_image(face, str(tmp_path), clip=False)
    assert info.value.reason == "unreadable_image" and "named pipe" in info.value.detail
