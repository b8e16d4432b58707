"""Face backends: dlib (default, weights from PyPI) and the bring-your-own-weights ONNX ones."""
