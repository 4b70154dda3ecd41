"""TFX Pusher executor with two more guarantees.

1. The blessing must name the model being pushed. TFX's Pusher looks only at the blessing's
   `blessed` flag: a blessing produced for another model (a wiring mistake, or a stale artifact
   picked by a resolver) would push an unevaluated model. Here the blessing's `current_model_id`
   must equal the pushed Model artifact's id.
2. A model already pushed to the destination is not pushed again as a new version (a rerun that
   re-blesses the same model). Each pushed version holds `ffem_pushed_model.json` naming its model.
"""
import json
import os

import tensorflow as tf
from absl import logging
from tfx.components.pusher import executor as pusher_executor
from tfx.proto import pusher_pb2
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import proto_utils

PUSH_MARKER = "ffem_pushed_model.json"


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
        blessed_id = blessing.get_int_custom_property("current_model_id")
        if blessed_id != model.id:
            logging.error("Refusing to push model %d: its blessing %d was issued for model %d",
                          model.id, blessing.id, blessed_id)
            return False
        return True

    def Do(self, input_dict, output_dict, exec_properties) -> None:
        model = artifact_utils.get_single_instance(input_dict[standard_component_specs.MODEL_KEY])
        model_push = artifact_utils.get_single_instance(
            output_dict[standard_component_specs.PUSHED_MODEL_KEY])
        destination = pusher_pb2.PushDestination()
        proto_utils.json_to_proto(exec_properties[standard_component_specs.PUSH_DESTINATION_KEY],
                                  destination)
        base = destination.filesystem.base_directory
        if base and self.CheckBlessing(input_dict):
            existing = find_pushed_version(base, model.uri)
            if existing:
                logging.info("Model %d is already pushed at %s; not pushing it again", model.id,
                             existing)
                self._MarkPushed(model_push, pushed_destination=existing,
                                 pushed_version=os.path.basename(existing))
                return
        super().Do(input_dict, output_dict, exec_properties)
        if model_push.get_int_custom_property("pushed") == 1:
            serving_path = model_push.get_string_custom_property("pushed_destination")
            with tf.io.gfile.GFile(os.path.join(serving_path, PUSH_MARKER), "w") as f:
                json.dump({"model_id": model.id, "model_uri": model.uri}, f)


def find_pushed_version(base_directory: str, model_uri: str):
    """The version directory already holding this model, if any."""
    if not tf.io.gfile.isdir(base_directory):
        return None
    for version in sorted(tf.io.gfile.listdir(base_directory)):
        marker = os.path.join(base_directory, version.rstrip("/"), PUSH_MARKER)
        if tf.io.gfile.exists(marker):
            with tf.io.gfile.GFile(marker) as f:
                if json.load(f).get("model_uri") == model_uri:
                    return os.path.join(base_directory, version.rstrip("/"))
    return None
