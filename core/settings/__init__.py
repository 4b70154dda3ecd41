"""The settings tree's sections (TensorFlow-free): `base` (the machinery: typed sections, the one
unknown-key check), `ingest`, `model`, `training`, `gate`; pipeline/configs.py is the tree's root."""
