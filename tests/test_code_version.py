"""Changed code is a cache miss: every component whose code is ours carries the hash of the files its
module imports, followed into sub-packages."""
import os
import textwrap

import pytest

from pipeline import code_version, configs
from pipeline import pipeline as pipeline_module


def write(root, relative, text):
    path = os.path.join(root, relative)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(textwrap.dedent(text))
    return path


@pytest.fixture
def tree(tmp_path):
    root = str(tmp_path)
    write(root, "pkg/__init__.py", "")
    write(root, "pkg/entry.py", """
        from pkg.sub import helper
        def run():
            from pkg.sub.deep import late   # imported inside a function
            return helper.VALUE + late.VALUE
        """)
    write(root, "pkg/sub/__init__.py", "")
    write(root, "pkg/sub/helper.py", "from . import sibling\nVALUE = 1\n")
    write(root, "pkg/sub/sibling.py", "VALUE = 2\n")
    write(root, "pkg/sub/deep/__init__.py", "")
    write(root, "pkg/sub/deep/late.py", "VALUE = 3\n")
    write(root, "pkg/unrelated.py", "VALUE = 4\n")
    return root


def test_closure_follows_sub_packages_relative_and_function_level_imports(tree):
    files = {os.path.relpath(p, tree) for p in code_version.module_closure("pkg.entry", root=tree)}
    assert files == {"pkg/__init__.py", "pkg/entry.py", "pkg/sub/__init__.py", "pkg/sub/helper.py",
                     "pkg/sub/sibling.py", "pkg/sub/deep/__init__.py", "pkg/sub/deep/late.py"}


@pytest.mark.parametrize("edited", ["pkg/sub/helper.py", "pkg/sub/sibling.py",
                                    "pkg/sub/deep/late.py", "pkg/sub/__init__.py"])
def test_an_edit_under_a_sub_package_changes_the_fingerprint(tree, edited):
    before = code_version.code_fingerprint("pkg.entry", root=tree)
    with open(os.path.join(tree, edited), "a") as f:
        f.write("# edited\n")
    assert code_version.code_fingerprint("pkg.entry", root=tree) != before


def test_an_edit_outside_the_closure_keeps_the_fingerprint(tree):
    before = code_version.code_fingerprint("pkg.entry", root=tree)
    with open(os.path.join(tree, "pkg/unrelated.py"), "a") as f:
        f.write("# edited\n")
    assert code_version.code_fingerprint("pkg.entry", root=tree) == before


def test_an_unknown_module_is_an_error(tree):
    with pytest.raises(ValueError, match="pkg.missing"):
        code_version.code_fingerprint("pkg.missing", root=tree)


def test_the_trainer_and_evaluator_closures_hold_the_recall_code_they_use():
    """The defect this replaces: only top-level files of `models` and `components` were hashed, so the
    recall code the Trainer validates with never invalidated the Trainer's cache."""
    recall = os.path.join(configs.REPO_ROOT, "core", "recall.py")
    for component in ("Trainer", "RecallEvaluator"):
        assert recall in code_version.module_closure(pipeline_module.CODE_MODULES[component])


def test_every_custom_component_carries_its_code_version():
    config = configs.preset("demo", tflite_levels=[0], metadata_path=None)
    components = {c.id: c for c in pipeline_module.create_components(config)}
    for node, module in pipeline_module.CODE_MODULES.items():
        expected = code_version.code_fingerprint(module)
        properties = components[node].exec_properties
        if "code_version" in properties:
            assert properties["code_version"] == expected, node
        else:   # TFX's own components: the custom_config JSON
            assert f'"code_version": "{expected}"' in properties["custom_config"], node


@pytest.mark.pipeline
def test_changed_ingest_code_reruns_ingest_instead_of_reusing_the_cache(small_sample, tmp_path,
                                                                       monkeypatch):
    from tfx import v1 as tfx

    from tests.pipeline_helpers import node_executions, open_store, state_name

    config = configs.PipelineConfig(
        pipeline_root=str(tmp_path / "root"), metadata_path=str(tmp_path / "m.sqlite"),
        ingest=configs.IngestConfig(data_root=small_sample,
                                    image_root=os.path.join(small_sample, "images")),
        beam_pipeline_args=[], last_stage="ingest")

    def run():
        tfx.orchestration.LocalDagRunner().run(pipeline_module.create_pipeline(config))
        return state_name(node_executions(open_store(config.metadata_path), "FaceExampleGen")[-1])

    assert run() == "COMPLETE"
    assert run() == "CACHED"
    real = code_version.code_fingerprint
    # What an edit in core/records.py (a sub-package module the ingest imports) does to the hash.
    monkeypatch.setattr(pipeline_module, "code_fingerprint",
                        lambda module: real(module) + "-edited" if "face_example_gen" in module
                        else real(module))
    assert run() == "COMPLETE"


def test_unknown_training_settings_stop_the_build_naming_the_closest_known_key():
    config = configs.preset("demo", metadata_path=None)
    with pytest.raises(ValueError, match=r"epohcs.*epochs"):
        config.updated({"training": {"epohcs": 5}}, "test")
