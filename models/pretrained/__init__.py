"""Networks pretrained on real faces, from the npm package `@vladmandic/face-api` (MIT), in Keras.

`face_recognition_net()`: float32 RGB [batch, 150, 150, 3], 0..255 -> the 128-d descriptor of
face-api's FaceRecognitionNet. `face_landmark_68_net()`: [batch, 112, 112, 3] -> [batch, 68, 2]
landmarks relative to the crop. The weights are read from the package cached by
`models.pretrained.fetch` (`make pretrained`); nothing is downloaded when a model is built, and
without the cached package these raise `PretrainedUnavailable` saying how to get it. Licence and
attribution: models/pretrained/LICENSE-face-api.txt.
"""
from models.pretrained.fetch import PretrainedUnavailable
from models.pretrained.landmark_net import face_landmark_68_net
from models.pretrained.recognition_net import face_recognition_net

__all__ = ["face_recognition_net", "face_landmark_68_net", "PretrainedUnavailable"]
