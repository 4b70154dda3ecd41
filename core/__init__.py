"""The TensorFlow-free core: the face-list format and its checks, feature names, the recall metric.

Nothing here imports TensorFlow, TFX or Beam, so the checks and metrics run anywhere (Beam workers,
tools, tests) without paying for a TensorFlow import. Every other layer may import from here; this
package imports from no other package of the project.
"""
