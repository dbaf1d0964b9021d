"""facial_attributes' bytes twin (Python backend); written by `facialattr export`.

Needs the facialattr package in the Python the backend runs (docs/SERVER_DECODE.md).
"""

from facialattr.serving.encoded_model import TritonPythonModel  # noqa: F401
