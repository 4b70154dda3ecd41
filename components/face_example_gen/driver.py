"""FaceExampleGen's driver: TFX's file-based driver, with the image files in the cache key."""
import hashlib

from absl import logging
from apache_beam.io.filesystems import FileSystems
from tfx.components.example_gen import driver as example_gen_driver
from tfx.components.example_gen import utils as example_gen_utils

from components.face_example_gen.spec import FINGERPRINT_IMAGES, IMAGE_ROOT


def image_tree_fingerprint(image_root: str) -> str:
    """Path, size and modification time of every file under the image root, hashed.

    ExampleGen's own fingerprint covers the list files only; images are referenced from inside
    them, so a replaced image would otherwise silently reuse a stale cached artifact.
    """
    pattern = image_root.rstrip("/") + "/**"
    metadata = FileSystems.match([pattern])[0].metadata_list
    digest = hashlib.sha256()
    prefix = len(image_root.rstrip("/")) + 1
    for m in sorted(metadata, key=lambda m: m.path):
        digest.update(f"{m.path[prefix:]}\t{m.size_in_bytes}\t{m.last_updated_in_seconds!r}\n"
                      .encode("utf-8", "surrogateescape"))
    return f"image_root:{image_root},files:{len(metadata)},sha256:{digest.hexdigest()}"


class FaceExampleGenDriver(example_gen_driver.FileBasedDriver):
    """The file-based driver, with the images under the root added to the input fingerprint."""

    def resolve_exec_properties(self, exec_properties, pipeline_info, component_info):
        exec_properties = super().resolve_exec_properties(exec_properties, pipeline_info,
                                                          component_info)
        if exec_properties.get(FINGERPRINT_IMAGES, 1):
            fingerprint = image_tree_fingerprint(exec_properties[IMAGE_ROOT])
            logging.info("FaceExampleGen image fingerprint: %s", fingerprint)
            key = example_gen_utils.FINGERPRINT_PROPERTY_NAME
            exec_properties[key] = f"{exec_properties.get(key) or ''}\n{fingerprint}"
        return exec_properties
