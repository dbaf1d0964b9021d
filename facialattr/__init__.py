"""facialattr: batch scoring of the 40 CelebA facial attributes behind NVIDIA Triton.

The core package holds what every part shares: the model contract, Triton's typed
config, the repository, the error hierarchy and exit codes, preprocessing. It imports
no part; the parts (client, serving, export, training) sit on it, and the apps
(``facialattr.app``: the ``facialattr`` command, the demo; ``facialattr.benchmarks``)
on top (docs/ARCHITECTURE.md, enforced by tests/test_layers.py). Heavy dependencies
(TensorFlow, onnxruntime, tritonserver) are imported only by the parts that need them.
"""

__version__ = "0.1.0"

MODEL_NAME = "facial_attributes"
