"""FaceExampleGen's execution parameters: TFX's file-based ExampleGen spec plus the ingest's
(component.py says what they are)."""
from tfx.types import standard_component_specs
from tfx.types.component_spec import ExecutionParameter

IMAGE_ROOT = "image_root"
MAX_BAD_FRACTION = "max_bad_fraction"
MAX_IMAGE_PIXELS = "max_image_pixels"
MAX_IMAGE_BYTES = "max_image_bytes"
BOX_TOLERANCE = "box_tolerance"
LIST_FORMAT = "list_format"
FINGERPRINT_IMAGES = "fingerprint_images"
OFFSET_LABELS = "offset_labels"
CODE_VERSION = "code_version"


class FaceExampleGenSpec(standard_component_specs.FileBasedExampleGenSpec):
    PARAMETERS = {
        **standard_component_specs.FileBasedExampleGenSpec.PARAMETERS,
        IMAGE_ROOT: ExecutionParameter(type=str),
        MAX_BAD_FRACTION: ExecutionParameter(type=float),
        MAX_IMAGE_PIXELS: ExecutionParameter(type=int),
        MAX_IMAGE_BYTES: ExecutionParameter(type=int),
        BOX_TOLERANCE: ExecutionParameter(type=float),
        LIST_FORMAT: ExecutionParameter(type=str, optional=True),
        FINGERPRINT_IMAGES: ExecutionParameter(type=int),
        OFFSET_LABELS: ExecutionParameter(type=int, optional=True),
        # Hash of the ingest code (pipeline/code_version.py): changed code is a cache miss.
        CODE_VERSION: ExecutionParameter(type=str, optional=True),
    }
