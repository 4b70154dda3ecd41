"""Kubeflow Pipelines v2's own artifact types, so its UI shows the evaluation.

The KFP v2 UI renders an artifact by its schema title: `system.HTML` (and `system.Markdown`) as a page
read from the artifact's URI, `system.Metrics` as a table of its metadata's numbers. TFX's KFP v2
compiler gives a custom artifact type the schema title `TYPE_NAME`, and TFX's container entrypoint
imports the class by that title, so these classes must be importable as `system.<Name>`: that is the
only reason this top-level package exists. Under LocalDagRunner they are ordinary artifact types.
"""
from tfx.types import artifact, value_artifact


class HTML(value_artifact.ValueArtifact):
    """A self-contained HTML page stored as the file at the artifact's URI (what the KFP UI reads)."""
    TYPE_NAME = "system.HTML"

    def encode(self, value: str) -> bytes:
        return value.encode("utf-8")

    def decode(self, serialized_value: bytes) -> str:
        return serialized_value.decode("utf-8")


class Metrics(artifact.Artifact):
    """Scalar metrics as the artifact's numeric custom properties (its metadata on KFP)."""
    TYPE_NAME = "system.Metrics"
