"""facekit's dataset tool: capture, label, convert, validate, augment and split face datasets.

Importing this package is cheap: heavy libraries (TensorFlow, OpenCV, Albumentations,
labelme, Qt, pandas) are imported inside the functions that need them.
"""

__version__ = "0.1.0"
