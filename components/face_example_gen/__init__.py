"""FaceExampleGen: the JSON face list + image root ingest (component, Beam transform, checks)."""
