"""facekit's trainer: fit, evaluate, predict and export MobileNetV2 / VGG16 transfer-learning
models (face presence + box, or face identity) from the TFRecords `datatool split` writes.
"""

__version__ = "0.1.0"
