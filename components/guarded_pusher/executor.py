"""TFX Pusher executor with three more guarantees.

1. The blessing must name the model being pushed. TFX's Pusher looks only at the blessing's
   `blessed` flag: a blessing produced for another model (a wiring mistake, or a stale artifact
   picked by a resolver) would push an unevaluated model. Here the blessing's `current_model_id`
   must name the pushed Model artifact: its ML Metadata id under LocalDagRunner, its resource name
   on KFP v2 / Vertex (where the executor sees the id TFX's entrypoint derives from that name). An
   unset or 0 id on either side never matches (two unset ids would otherwise compare equal).
   `blessing_names_model` is the one place the reference is compared.
2. A model that is already the newest pushed version is not pushed again (a rerun that re-blesses
   the same model). Each pushed version holds `ffem_pushed_model.json` naming its model.
3. A model pushed earlier but no longer the newest (A, then B, then A re-blessed) is pushed again as
   a new version above every existing one: TF Serving serves the highest version, so recording A
   at its old directory would say A is served while B is. Versions are TFX's Unix-timestamp
   seconds, raised above the highest existing version when the clock has not passed it (two
   pushes within one second would otherwise share, or invert, a version).
4. The model ships with its operating point. The blessing must hold the evaluator's
   `operating_point.json` (core/operating_point.py) measured for exactly this model (its uri);
   without it nothing is pushed. The pushed version holds it as `assets/operating_point.json`
   (where the SavedModel's `verify` / `compare` / `operating_point` functions read the threshold),
   plus the model card files the blessing must carry too (`SHIPPED_FILES`), written before
   saved_model.pb; the shipped copy of the operating point adds the blessing's id and URI.
   A model whose newest pushed version holds another operating point (re-evaluated on other data)
   is pushed again as a new version. Only filesystem destinations with timestamp versioning are
   supported: TFX's own push to other destinations would ship the model without its operating point.
"""
import hashlib
import json
import os
import time
from typing import List, Optional, Tuple, Union

import tensorflow as tf
from absl import logging
from tfx.components.pusher import executor as pusher_executor
from tfx.proto import pusher_pb2
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import io_utils, proto_utils

from core import model_card, operating_point

PUSH_MARKER = operating_point.PUSH_MARKER
_TIMESTAMP_VERSIONING = (pusher_pb2.Versioning.AUTO, pusher_pb2.Versioning.UNIX_TIMESTAMP)
ASSET_PATH = operating_point.ASSET   # inside the pushed SavedModel
# Files of the blessing copied next to the pushed SavedModel when present (the model card).
SHIPPED_FILES = (model_card.JSON_FILE, model_card.HTML_FILE)
# The parts of an operating point that make two of them the same for serving.
_SAME_POINT_KEYS = ("threshold", "target_fmr", "eval_data")


def resource_name_id(name: str) -> int:
    """The integer id TFX's KFP v2 container entrypoint gives an artifact named `name` (a Vertex ML
    Metadata resource name): SHA-256 of the name modulo 2**63. The executor sees only that id, so a
    blessing that names its model by resource name is matched through it."""
    return int(hashlib.sha256(name.encode("utf-8")).hexdigest(), 16) % (1 << 63)


def blessed_model_ref(blessing) -> Union[int, str, None]:
    """The blessing's `current_model_id`: an ML Metadata integer id (LocalDagRunner), or the Model's
    resource name (KFP v2 / Vertex, where TFX's entrypoint rewrites it; it arrives as JSON metadata).
    None when unset."""
    properties = blessing.mlmd_artifact.custom_properties
    if "current_model_id" not in properties:
        return None
    value = properties["current_model_id"]
    kind = value.WhichOneof("value")
    if kind == "struct_value":
        decoded = blessing.get_json_value_custom_property("current_model_id")
        return int(decoded) if isinstance(decoded, float) and decoded.is_integer() else decoded
    return getattr(value, kind) if kind in ("int_value", "string_value") else None


def blessing_names_model(blessing, model) -> Optional[str]:
    """None when `blessing` was issued for exactly `model`, else the reason it was not.

    0, an empty name or an unset property names no model; a model without an id (0 or unset) is
    named by no blessing. The only place a blessing's model reference is read and compared."""
    ref = blessed_model_ref(blessing)
    if not model.id:
        return "the model artifact has no id (0 or unset), so no blessing can name it"
    if ref is None or ref == 0 or ref == "":
        return f"its blessing {blessing.id} names no model (current_model_id is unset, 0 or empty)"
    if isinstance(ref, str):
        if resource_name_id(ref) != model.id:
            return f"its blessing {blessing.id} was issued for model {ref}"
        return None
    if not isinstance(ref, int) or ref != model.id:
        return f"its blessing {blessing.id} was issued for model {ref!r}"
    return None


class Executor(pusher_executor.Executor):

    def CheckBlessing(self, input_dict) -> bool:
        if not super().CheckBlessing(input_dict):
            return False
        blessings = input_dict.get(standard_component_specs.MODEL_BLESSING_KEY)
        if not blessings:
            logging.error("Refusing to push: no model blessing given")
            return False
        blessing = artifact_utils.get_single_instance(blessings)
        model = artifact_utils.get_single_instance(input_dict[standard_component_specs.MODEL_KEY])
        problem = blessing_names_model(blessing, model)
        if not problem:
            self._point_text, problem = read_operating_point(blessing, model)
        if problem:
            logging.error("Refusing to push model %d (%s): %s", model.id, model.uri, problem)
            return False
        return True

    def Do(self, input_dict, output_dict, exec_properties) -> None:
        destination = pusher_pb2.PushDestination()
        proto_utils.json_to_proto(exec_properties[standard_component_specs.PUSH_DESTINATION_KEY],
                                  destination)
        filesystem = destination.filesystem
        if (destination.WhichOneof("destination") != "filesystem" or not filesystem.base_directory
                or filesystem.versioning not in _TIMESTAMP_VERSIONING):
            raise ValueError("the GuardedPusher pushes to a filesystem base_directory with "
                             "timestamp versioning only (anything else would ship the model "
                             "without its operating point)")
        self._log_startup(input_dict, output_dict, exec_properties)
        model = artifact_utils.get_single_instance(input_dict[standard_component_specs.MODEL_KEY])
        model_push = artifact_utils.get_single_instance(
            output_dict[standard_component_specs.PUSHED_MODEL_KEY])
        if not self.CheckBlessing(input_dict):
            self._MarkNotPushed(model_push)
            return
        base = filesystem.base_directory
        versions = _versions(base)
        existing = find_pushed_version(base, model.uri)
        if existing and not same_operating_point(existing, self._point_text):
            logging.info("Model %d was pushed at %s with another operating point: pushing it "
                         "again with the new one", model.id, existing)
            existing = None
        if existing and existing == os.path.join(base, versions[-1][1]):
            logging.info("Model %d is already the newest pushed version, %s; not pushing it again",
                         model.id, existing)
            self._MarkPushed(model_push, pushed_destination=existing,
                             pushed_version=os.path.basename(existing))
            return
        if existing:
            logging.info("Model %d was pushed at %s, but version %s is newer and is what serving "
                         "loads: pushing it again as a new version", model.id, existing,
                         versions[-1][1])
        version = next_version(versions[-1][0] if versions else None)
        serving_path = os.path.join(base, str(version))
        model_path = self.GetModelPath(input_dict)
        # saved_model.pb last, as TFX's Pusher does: model servers take it as "the version is whole".
        io_utils.copy_dir(model_path, serving_path, deny_regex_patterns=[r"saved_model\.pb"])
        self._ship(input_dict, serving_path)
        saved_model = os.path.join(model_path, "saved_model.pb")
        if tf.io.gfile.exists(saved_model):
            io_utils.copy_file(saved_model, os.path.join(serving_path, "saved_model.pb"))
        with tf.io.gfile.GFile(os.path.join(serving_path, PUSH_MARKER), "w") as f:
            json.dump({"model_id": model.id, "model_uri": model.uri}, f)
        io_utils.copy_dir(model_path, model_push.uri)    # TFX's archive copy in the artifact
        self._ship(input_dict, model_push.uri)
        self._MarkPushed(model_push, pushed_destination=serving_path, pushed_version=str(version))
        logging.info("Model %d pushed to %s", model.id, serving_path)

    def _ship(self, input_dict, directory: str) -> None:
        """The operating point into `directory`'s SavedModel assets, the card files beside it."""
        tf.io.gfile.makedirs(os.path.dirname(os.path.join(directory, ASSET_PATH)))
        with tf.io.gfile.GFile(os.path.join(directory, ASSET_PATH), "w") as f:
            f.write(self._point_text)
        blessing = artifact_utils.get_single_instance(
            input_dict[standard_component_specs.MODEL_BLESSING_KEY])
        for name in SHIPPED_FILES:
            source = os.path.join(blessing.uri, name)
            if tf.io.gfile.exists(source):
                io_utils.copy_file(source, os.path.join(directory, name), overwrite=True)


def read_operating_point(blessing, model) -> Tuple[Optional[str], Optional[str]]:
    """(the text of the blessing's operating_point.json, None) when it is a valid operating point
    measured for `model`, else (None, the reason)."""
    path = os.path.join(blessing.uri, operating_point.FILE)
    if not tf.io.gfile.exists(path):
        return None, (f"its blessing {blessing.id} carries no {operating_point.FILE} (the "
                      f"evaluation set no threshold, or the blessing is not the RecallEvaluator's)")
    with tf.io.gfile.GFile(path) as f:
        text = f.read()
    try:
        point = operating_point.loads(text, source=path)
    except ValueError as e:
        return None, str(e)
    if point["model"].get("uri") != model.uri:
        return None, (f"{path} was measured for model {point['model'].get('uri')!r}, not "
                      f"{model.uri!r}")
    missing = [name for name in SHIPPED_FILES if not tf.io.gfile.exists(os.path.join(blessing.uri, name))]
    if missing:
        return None, (f"its blessing {blessing.id} carries no {' or '.join(missing)}: every pushed "
                      f"model ships with its model card")
    # The shipped copy also names the blessing (an id the evaluator could not know: TFX gives its
    # outputs ids when it publishes them).
    return operating_point.dumps({**point, "blessing": {"id": blessing.id or None,
                                                        "uri": blessing.uri}}), None


def same_operating_point(version_dir: str, text: str) -> bool:
    """Whether the pushed version at `version_dir` holds the same operating point as `text`
    (threshold, target FMR and eval data; the evaluation's own id may differ)."""
    path = os.path.join(version_dir, ASSET_PATH)
    if not tf.io.gfile.exists(path):
        return False
    with tf.io.gfile.GFile(path) as f:
        try:
            shipped = operating_point.loads(f.read(), source=path)
        except ValueError:
            return False
    new = operating_point.loads(text)
    return all(shipped.get(key) == new.get(key) for key in _SAME_POINT_KEYS)


def _versions(base_directory: str) -> List[Tuple[int, str]]:
    """(number, directory name) of every version under `base_directory`, lowest first: the
    all-digit directory names, which are what model servers load (the highest is served)."""
    if not tf.io.gfile.isdir(base_directory):
        return []
    names = (name.rstrip("/") for name in tf.io.gfile.listdir(base_directory))
    return sorted((int(name), name) for name in names if name.isascii() and name.isdigit())


def next_version(newest: Optional[int]) -> int:
    """The current Unix time in seconds (TFX's versioning), or newest + 1 when the clock has not
    passed the newest existing version: every push is strictly above all before it."""
    now = int(time.time())
    return now if newest is None or now > newest else newest + 1


def find_pushed_version(base_directory: str, model_uri: str) -> Optional[str]:
    """The highest version directory already holding this model, if any."""
    for _, name in reversed(_versions(base_directory)):
        marker = os.path.join(base_directory, name, PUSH_MARKER)
        if tf.io.gfile.exists(marker):
            with tf.io.gfile.GFile(marker) as f:
                if json.load(f).get("model_uri") == model_uri:
                    return os.path.join(base_directory, name)
    return None
