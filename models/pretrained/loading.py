"""Puts TF.js weights into Keras layers by name, checking that every weight is used exactly once."""
from __future__ import annotations

import os
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np

from models.pretrained import fetch
from models.pretrained.tfjs_weights import load_weights


class WeightMappingError(ValueError):
    """The package's weights and the Keras architecture disagree (name, shape or count)."""


def package_weights(model_name: str, cache: Optional[str] = None) -> Dict[str, np.ndarray]:
    """The weights of `model/<model_name>-weights_manifest.json` in the cached package."""
    return load_weights(os.path.join(fetch.model_dir(cache), f"{model_name}-weights_manifest.json"))


def assign(model, weights: Mapping[str, np.ndarray], mapping: Mapping[str, Sequence[str]],
           source: str) -> None:
    """Sets each layer's variables (in `layer.get_weights()` order) to the named TF.js weights.

    `mapping` is {Keras layer name: [TF.js weight names]}. Raises WeightMappingError naming the
    weight when one is missing, has another shape, or is left unused by the architecture.
    """
    used: List[str] = []
    for layer_name, names in mapping.items():
        layer = model.get_layer(layer_name)
        current = layer.get_weights()
        if len(current) != len(names):
            raise WeightMappingError(f"{source}: layer {layer_name} has {len(current)} variables, "
                                     f"mapped to {len(names)} weights {list(names)}")
        values = []
        for name, variable in zip(names, current):
            if name not in weights:
                raise WeightMappingError(f"{source}: no weight {name!r} for layer {layer_name}")
            value = weights[name]
            if value.shape != variable.shape:
                raise WeightMappingError(f"{source}: weight {name!r} has shape {list(value.shape)}, "
                                         f"layer {layer_name} needs {list(variable.shape)}")
            values.append(value.astype(variable.dtype))
            used.append(name)
        layer.set_weights(values)
    unused = sorted(set(weights) - set(used))
    if unused:
        raise WeightMappingError(f"{source}: weights not used by the architecture: {unused}")
