"""Locust load test of the facialattr Triton server over gRPC (tritonclient).

Three user kinds: ``CctvUser`` sends one prepared face per request, back to back,
like a camera loop; ``BulkUser`` sends batches of ``--bulk-batch`` faces, like a
folder scorer; ``JpegUser`` sends one face per request as its JPEG file's bytes to
the model's bytes twin (server-side decoding, docs/SERVER_DECODE.md). Each call is
reported to Locust through ``events.request``.

Headless, bounded, against a local server (``facialattr serve`` in another shell):

    locust -f benchmarks/locustfile.py --headless -u 16 -r 16 -t 60s \
        --host HOST:PORT --csv out/locust --html out/locust.html CctvUser

Omit the class name to mix all kinds (CCTV users are 4x as frequent as each other kind). Inputs are
random frames at the size the server's model contract asks for (speed does not
depend on pixel values); ``--images DIR`` sends real faces prepared by the client
library instead.
"""

# gRPC must be told about gevent before any channel exists, or Locust's greenlets
# block each other inside the gRPC C core.
import grpc.experimental.gevent as grpc_gevent

grpc_gevent.init_gevent()

import time  # noqa: E402
import weakref  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import tritonclient.grpc as grpcclient  # noqa: E402
from locust import User, constant, events, task  # noqa: E402

from facialattr import MODEL_NAME, defaults, encoded  # noqa: E402
from facialattr.contract import CELEBA_ALIGNED_SIZE_HW, ModelContract  # noqa: E402
from facialattr.triton_config import ServedModel  # noqa: E402

_IMAGE_POOL = 64


class _Client(grpcclient.InferenceServerClient):
    """tritonclient's client with a ``close()`` that runs once.

    Why: the process could hang for ever after "Shutting down" (issue 16). In gevent mode each
    ``close()`` of a gRPC channel decrements gRPC's channel count under a C mutex, and the last
    one wakes a gevent thread-pool thread that takes the GIL while holding that mutex.
    tritonclient's ``__del__`` closes again, so the garbage collection at interpreter exit
    decremented once more; if that waker was woken just before exit, Python ended it (a daemon
    thread asking for the GIL during finalization) with the mutex still locked, and the extra
    decrement waited on it in a futex, deaf to SIGTERM (gdb: ``Py_FinalizeEx`` -> GC ->
    ``InferenceServerClient.__del__`` -> ``gevent_decrement_channel_count``).
    """

    _closed = False

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        super().close()


_OPEN_CLIENTS: weakref.WeakSet[_Client] = weakref.WeakSet()


@events.quit.add_listener
def _close_clients(**_kwargs) -> None:
    """Close what on_stop did not reach while gevent still runs, then let gRPC's waker finish."""
    import gevent

    for client in list(_OPEN_CLIENTS):
        client.close()
    gevent.sleep(0.1)


@events.init_command_line_parser.add_listener
def _add_arguments(parser) -> None:
    parser.add_argument("--model-name", default=MODEL_NAME, help="served model name")
    parser.add_argument("--images", default="", help="folder of face images to send (default: random frames)")
    parser.add_argument("--bulk-batch", type=int, default=32, help="faces per BulkUser request")
    parser.add_argument("--request-timeout-s", type=float, default=defaults.REQUEST_TIMEOUT_S)


def grpc_target(host: str) -> str:
    """``HOST:PORT`` from a Locust --host that may carry a scheme."""
    for scheme in ("grpc://", "http://", "https://"):
        if host.startswith(scheme):
            return host[len(scheme):].rstrip("/")
    return host.rstrip("/")


def _load_images(options, contract: ModelContract) -> np.ndarray:
    h, w = contract.preprocessing.size_hw
    if not options.images:
        return np.random.default_rng(0).integers(0, 256, size=(_IMAGE_POOL, h, w, 3), dtype=np.uint8)
    from facialattr.benchmarks.images import list_images, prepare_files

    return prepare_files(list_images(Path(options.images), limit=_IMAGE_POOL), contract.preprocessing)


class TritonUser(User):
    """A Locust user with its own gRPC client that reads the served model's config at start."""

    abstract = True
    wait_time = constant(0)
    batch_size = 1

    def on_start(self) -> None:
        """Open this user's client and read the served config (tensor names, input size) from the server."""
        options = self.environment.parsed_options
        self.model_name = options.model_name
        self.timeout_s = options.request_timeout_s
        self.client = _Client(grpc_target(self.host or defaults.grpc_url()))
        _OPEN_CLIENTS.add(self.client)
        config = self.client.get_model_config(self.model_name).config
        self.served = ServedModel.from_proto(config)
        self.contract = self.served.contract
        self.images = _load_images(options, self.contract)
        self.cursor = 0

    def on_stop(self) -> None:
        """Close the client once, here (see benchmarks/README.md: a second close from ``__del__`` could hang)."""
        self.client.close()

    def _next_batch(self, n: int) -> np.ndarray:
        idx = np.arange(self.cursor, self.cursor + n) % len(self.images)
        self.cursor = (self.cursor + n) % len(self.images)
        return self.images[idx]

    def infer(self, n: int, name: str) -> None:
        """Send ``n`` images as one request and report it to Locust as ``name`` (response time in ms)."""
        batch = self._next_batch(n)
        tensor = grpcclient.InferInput(self.served.config.input_name, list(batch.shape), "UINT8")
        tensor.set_data_from_numpy(batch)
        outputs = [grpcclient.InferRequestedOutput(self.served.config.output_name)]
        start = time.perf_counter()
        exception, length = None, 0
        try:
            result = self.client.infer(self.model_name, [tensor], outputs=outputs, client_timeout=self.timeout_s)
            probabilities = result.as_numpy(self.served.config.output_name)
            if probabilities is None or probabilities.shape != (n, self.contract.num_attributes):
                raise ValueError(f"unexpected output shape {getattr(probabilities, 'shape', None)}")
            length = probabilities.nbytes
        except Exception as exc:  # noqa: BLE001 - Locust records it as a failure
            exception = exc
        events.request.fire(
            request_type="grpc", name=name, response_time=(time.perf_counter() - start) * 1000.0,
            response_length=length, exception=exception, context={"batch_size": n},
        )


class CctvUser(TritonUser):
    """One face per request, as a camera loop sends them."""

    weight = 4

    @task
    def single_face(self) -> None:
        """One request with one face."""
        self.infer(1, "infer 1 face")


class BulkUser(TritonUser):
    """Batches of faces, as a folder scorer sends them."""

    weight = 1

    @task
    def batch_of_faces(self) -> None:
        """One request with ``--bulk-batch`` faces (at most the server's max batch size)."""
        n = min(self.environment.parsed_options.bulk_batch, self.served.config.max_batch_size)
        self.infer(n, f"infer batch of {n}")


def _load_encoded(options) -> list[bytes]:
    """JPEG files' bytes from ``--images``, or random frames at CelebA's aligned size saved as JPEG."""
    if options.images:
        from facialattr.benchmarks.images import list_images

        return [path.read_bytes() for path in list_images(Path(options.images), limit=_IMAGE_POOL)]
    import io

    from PIL import Image

    h, w = CELEBA_ALIGNED_SIZE_HW
    frames = np.random.default_rng(0).integers(0, 256, size=(_IMAGE_POOL, h, w, 3), dtype=np.uint8)
    out = []
    for frame in frames:
        buffer = io.BytesIO()
        Image.fromarray(frame).save(buffer, format="JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


class JpegUser(TritonUser):
    """One face per request as its JPEG bytes: a client that neither decodes nor resizes."""

    weight = 1

    def on_start(self) -> None:
        """The pixel model's contract as for every user, then the encoded images to send."""
        super().on_start()
        self.encoded_images = _load_encoded(self.environment.parsed_options)

    @task
    def single_jpeg(self) -> None:
        """One request with one encoded face to the bytes twin; a row error counts as a failure."""
        data = self.encoded_images[self.cursor % len(self.encoded_images)]
        self.cursor += 1
        rows = np.empty((1, 1), np.object_)  # np.object_: np.bytes_ drops trailing zero bytes
        rows[0, 0] = data
        tensor = grpcclient.InferInput(encoded.INPUT_NAME, [1, 1], "BYTES")
        tensor.set_data_from_numpy(rows)
        outputs = [grpcclient.InferRequestedOutput(n) for n in (encoded.OUTPUT_NAME, encoded.ERROR_KIND_NAME)]
        start = time.perf_counter()
        exception, length = None, 0
        try:
            result = self.client.infer(encoded.encoded_model_name(self.model_name), [tensor], outputs=outputs,
                                       client_timeout=self.timeout_s)
            kind = result.as_numpy(encoded.ERROR_KIND_NAME)[0, 0]
            if kind:
                raise ValueError(f"the server could not decode the image: {kind.decode()}")
            length = result.as_numpy(encoded.OUTPUT_NAME).nbytes
        except Exception as exc:  # noqa: BLE001 - Locust records it as a failure
            exception = exc
        events.request.fire(
            request_type="grpc", name="infer 1 JPEG (server decode)", response_time=(time.perf_counter() - start) * 1000.0,
            response_length=length, exception=exception, context={"batch_size": 1},
        )
