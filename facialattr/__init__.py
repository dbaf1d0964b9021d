"""facialattr: batch scoring of the 40 CelebA facial attributes behind NVIDIA Triton.

The core package holds what every part shares: the model contract, the error
hierarchy and the ``facialattr`` command line. Heavy dependencies (TensorFlow,
onnxruntime, tritonserver) are imported only by the parts that need them.
"""

__version__ = "0.1.0"

MODEL_NAME = "facial_attributes"
