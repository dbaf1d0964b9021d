"""Run the real ``tritonserver`` bundled in nvidia-pytriton on a facialattr model repository.

Three quirks of that binary on a plain Linux machine are handled here (see
docs/ARCHITECTURE.md): the Python-backend stub must sit next to the backend
library, the stub must load the running interpreter's own libpython, and the
stub ignores PYTHONPATH. The model repository on disk stays the one the GPU
container serves with its ONNX Runtime backend; this module derives a
Python-backend twin of it in a private work folder at start-up. A bytes model
(facial_attributes_bytes, facialattr/encoded.py) is a Python-backend model already and
is copied as it is, after a check against the pixel model it names.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from facialattr import MODEL_NAME, defaults, repository, triton_config
from facialattr.errors import PortInUseError, ServerError, UnsupportedPlatformError
from facialattr.serving import batch_guard, preload, process, workdirs

log = logging.getLogger(__name__)

_PYTHON_MODEL = Path(__file__).with_name("python_model.py")
_ADMIN_APIS = "shared-memory,model-repository,trace,logging"
_ADMIN_KEY_HEADER = "facialattr-admin-key"
# Starts tried with fresh automatic ports when another process took one before tritonserver bound it.
_PORT_ATTEMPTS = 5
# How often tritonserver hands freed heap memory back to the system, and from how much free
# memory on (serving.preload): a refused 1 GB request then costs its memory for about a second.
MALLOC_TRIM_INTERVAL_MS = 1000
MALLOC_TRIM_FREE_BYTES = 32 << 20
# ServerConfig port -> what sets it: the serve/demo flag (facialattr/app/flags.py), and the Makefile
# variable where `make quickstart` binds that port (it serves no HTTP).
PORT_SETTINGS: dict[str, str] = {
    "grpc_port": "--grpc-port (make quickstart GRPC_PORT=...)",
    "metrics_port": "--metrics-port (make quickstart METRICS_PORT=...)",
    "http_port": "--http-port",
}


@dataclass(frozen=True)
class ServerConfig:
    """How to run the server. A port of 0 means "any free port": the started server's
    ``config`` holds the ports it got. A port given by number is used or refused, never changed."""

    model_repository: Path
    host: str = defaults.HOST
    http_port: int = defaults.HTTP_PORT
    grpc_port: int = defaults.GRPC_PORT
    metrics_port: int = defaults.METRICS_PORT
    # Triton 2.51's HTTP frontend can be crashed by one request and leaks memory on gzip
    # bodies (SECURITY.md); clients and health checks use gRPC, so HTTP is served only when asked.
    allow_http: bool = False
    startup_timeout_s: float = 180.0
    log_verbose: int = 0
    # Shared-memory registration, repository, trace and logging APIs need a per-start random
    # key header: a local client cannot make the server map a /dev/shm region it names.
    restrict_admin_apis: bool = True
    # Request/response objects the gRPC frontend keeps for reuse. Each keeps the capacity of the
    # largest message it ever held, up to the 2 GiB receive limit 2.51 cannot lower, so with
    # Triton's default (8) any client can make the server pin ~1 GB per large request, even a
    # refused one (SECURITY.md). 0 frees every message after its reply.
    grpc_infer_allocation_pool_size: int = 0
    # SO_REUSEPORT on tritonserver's listening sockets (Triton's --reuse-grpc-port/--reuse-http-port), so
    # that a PortGuard of this user (serving/portguard.py) can hold the ports across restarts, and so
    # that connections this server leaves in TIME_WAIT do not keep a guard off its port later. Another
    # user can never share such a port; a second server of this user is refused by check_port_free.
    reuse_grpc_port: bool = True
    reuse_http_port: bool = True
    # Ports a PortGuard of this process holds (the supervisor's, for restarts): not checked before the
    # start, since the guard itself keeps every other process off them.
    guarded_ports: tuple[int, ...] = ()
    # Further tritonserver flags, passed as given (e.g. TLS: --grpc-use-ssl=true ...; SECURITY.md).
    extra_args: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.grpc_infer_allocation_pool_size < 0:
            raise ServerError(f"grpc_infer_allocation_pool_size must be 0 or more, got {self.grpc_infer_allocation_pool_size}")

    @property
    def grpc_url(self) -> str:
        """``HOST:PORT`` a client on this machine uses for gRPC (a wildcard bind host becomes this machine's)."""
        return f"{process.client_host(self.host)}:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        """``http://HOST:PORT`` a client on this machine uses for HTTP (served only with ``allow_http``)."""
        return f"http://{process.client_host(self.host)}:{self.http_port}"


class EmbeddedTriton:
    """A tritonserver process; use as a context manager or call start()/stop()."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self._process: subprocess.Popen | None = None
        self._workdir: Path | None = None
        # Name prefix of this server's /dev/shm regions: what stop() and a leak check look for.
        self.shm_prefix = f"facialattr_{uuid.uuid4().hex[:12]}_"
        self._preload: Path | None = None
        self._encoded_entries: list[repository.EncodedEntry] = []
        # Header value that unlocks the restricted admin APIs of this server start only.
        self.admin_key = secrets.token_urlsafe(24)

    def __enter__(self) -> EmbeddedTriton:
        return self if self.is_running() else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def grpc_admin_headers(self) -> dict[str, str]:
        """gRPC headers that unlock the restricted admin protocols (Triton prefixes the key name)."""
        return {f"triton-grpc-protocol-{_ADMIN_KEY_HEADER}": self.admin_key}

    @property
    def http_admin_headers(self) -> dict[str, str]:
        """HTTP headers that unlock the restricted admin APIs of this start."""
        return {_ADMIN_KEY_HEADER: self.admin_key}

    @property
    def pid(self) -> int | None:
        """The tritonserver process id (leader of its process group), or None when not started."""
        return self._process.pid if self._process else None

    @property
    def log_path(self) -> Path | None:
        """This start's tritonserver log file in the private work folder, or None before the first start."""
        return self._workdir / "tritonserver.log" if self._workdir else None

    def start(self) -> EmbeddedTriton:
        """Start tritonserver and wait until it is ready; returns self.

        Ports given as 0 are picked free; if another process takes one before tritonserver
        binds it, the start is retried with fresh ports. Raises PortInUseError for a taken
        port given by number, ModelRepositoryError for a broken repository, ServerError otherwise.
        """
        cfg = self.config
        # The served model must be valid; any other model folder (e.g. facial_attributes_int8) too,
        # and each bytes twin (facial_attributes_bytes) against the pixel model it names.
        entries = [repository.load_model(cfg.model_repository)]
        self._encoded_entries = []
        for path in sorted(Path(cfg.model_repository).iterdir()):
            if path.name == MODEL_NAME or not (path / "config.pbtxt").is_file():
                continue
            if repository.is_encoded_folder(path):
                self._encoded_entries.append(repository.load_encoded_model(cfg.model_repository, path.name))
            else:
                entries.append(repository.load_model(cfg.model_repository, path.name))
        workdirs.remove_stale()
        automatic = {name for name in self._bound_ports() if getattr(cfg, name) == 0}
        for name in self._bound_ports() - automatic:
            if getattr(cfg, name) not in cfg.guarded_ports:
                process.check_port_free(cfg.host, getattr(cfg, name), chosen_with=PORT_SETTINGS[name])
        for attempt in range(1, _PORT_ATTEMPTS + 1):
            picked = dict(zip(sorted(automatic), process.pick_free_ports(cfg.host, len(automatic)), strict=True))
            try:
                self._start_once(dataclasses.replace(cfg, **picked), entries)
                return self
            except PortInUseError as exc:
                # Only a port picked here is replaced; a port given by number is never changed.
                if attempt == _PORT_ATTEMPTS or not picked or not set(process.taken_ports(str(exc))) <= set(picked.values()):
                    raise
                log.info("a picked port was taken before tritonserver bound it; retrying with fresh ports")
        raise AssertionError("unreachable")

    def _bound_ports(self) -> set[str]:
        """Names of the ServerConfig port fields this server binds."""
        return {"grpc_port", "metrics_port"} | ({"http_port"} if self.config.allow_http else set())

    def _start_once(self, cfg: ServerConfig, entries: list[repository.ModelEntry]) -> None:
        binary, libs = process.bundled_server()
        self._workdir = workdirs.create(self.shm_prefix)
        try:
            backends = self._prepare_backends(binary)
            models = [self._derive_model(entry) for entry in entries]
            models += [self._derive_encoded_model(entry) for entry in self._encoded_entries]
            self._add_batch_guard(models)
            env = self._environment(libs)
            self._add_preload(env)
            args = self._arguments(binary, backends, cfg, env)
        except BaseException:
            self.stop()
            raise
        log.info("starting tritonserver on %s (gRPC %d, metrics %d%s)", cfg.host, cfg.grpc_port, cfg.metrics_port,
                 f", HTTP {cfg.http_port}" if cfg.allow_http else "")
        logfile = open(self.log_path, "wb")  # noqa: SIM115 - lives as long as the process
        # Own process group: stop() signals tritonserver and its Python-backend stubs together.
        self._process = subprocess.Popen(
            args, env=env, stdout=logfile, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=process.in_child,
        )
        logfile.close()
        try:
            self._wait_ready(cfg)
        except BaseException:
            self.stop()
            raise
        self.config = cfg
        log.info("Triton ready: gRPC %s%s", cfg.grpc_url, f", HTTP {cfg.http_url}" if cfg.allow_http else "")

    def _environment(self, libs: Path) -> dict[str, str]:
        env = dict(os.environ)
        # The stub ignores PYTHONPATH; its embedded interpreter finds its prefix by looking up
        # "python3" on PATH. Putting this interpreter first makes a venv (via its pyvenv.cfg) the
        # stub's environment: onnxruntime importable, and numpy 1.x as the stub was built for —
        # with the base interpreter's numpy 2 it intermittently returned empty output tensors.
        env["PATH"] = os.pathsep.join(p for p in (str(Path(sys.executable).parent), env.get("PATH")) if p)
        # The stub links libpython3.X: the running interpreter's own must win over the system's.
        env["LD_LIBRARY_PATH"] = os.pathsep.join(
            p for p in (sysconfig.get_config_var("LIBDIR"), str(libs), env.get("LD_LIBRARY_PATH")) if p
        )
        return env

    def _arguments(self, binary: Path, backends: Path, cfg: ServerConfig, env: dict[str, str]) -> list[str]:
        """tritonserver's command line (readable by every local user: no secret in it)."""
        args = [
            str(binary),
            f"--model-repository={self._workdir / 'models'}",
            f"--backend-directory={backends}",
            "--model-control-mode=none",
            "--strict-readiness=true",
            "--exit-on-error=true",
            f"--allow-http={str(cfg.allow_http).lower()}",
            f"--grpc-address={cfg.host}", f"--grpc-port={cfg.grpc_port}",
            f"--metrics-address={cfg.host}", f"--metrics-port={cfg.metrics_port}",
            "--allow-metrics=true", "--allow-gpu-metrics=false", "--allow-cpu-metrics=true",
            f"--backend-config=python,shm-region-prefix-name={self.shm_prefix}",
            f"--log-verbose={cfg.log_verbose}",
            f"--grpc-infer-allocation-pool-size={cfg.grpc_infer_allocation_pool_size}",
            f"--reuse-grpc-port={str(cfg.reuse_grpc_port).lower()}",
        ]
        if cfg.allow_http:
            args += [f"--http-address={cfg.host}", f"--http-port={cfg.http_port}",
                     f"--reuse-http-port={str(cfg.reuse_http_port).lower()}"]
        if cfg.restrict_admin_apis:
            restricted = f"{_ADMIN_APIS}:{_ADMIN_KEY_HEADER}={self._admin_key_argument(env)}"
            args.append(f"--grpc-restricted-protocol={restricted}")
            if cfg.allow_http:
                args.append(f"--http-restricted-api={restricted}")
        return args + list(cfg.extra_args)

    def _admin_key_argument(self, env: dict[str, str]) -> str:
        """The key as tritonserver's argv shows it: a placeholder the preload library fills in-process."""
        if self._preload is None:
            return self.admin_key
        env[preload.ENV_NAME] = self.admin_key
        return preload.PLACEHOLDER

    def _add_preload(self, env: dict[str, str]) -> None:
        """Preload the library that hides the admin key and keeps /dev/shm regions 0600 (serving.preload)."""
        try:
            self._preload = preload.build_preload(self._workdir)
        except ServerError as exc:
            self._preload = None
            log.warning("the admin key is on tritonserver's command line and its shared-memory regions (face "
                        "crops) are readable by every local user (%s; install a C compiler, SECURITY.md)", exc)
            return
        env["LD_PRELOAD"] = os.pathsep.join(p for p in (str(self._preload), env.get("LD_PRELOAD")) if p)
        env[preload.TRIM_ENV_NAME] = f"{MALLOC_TRIM_INTERVAL_MS}:{MALLOC_TRIM_FREE_BYTES}"

    def _add_batch_guard(self, models: list[Path]) -> None:
        """Give each derived model the batching strategy that keeps malformed requests out of others' batches."""
        try:
            library = batch_guard.build_batch_guard(self._workdir)
        except ServerError as exc:
            log.warning("a request with a negative batch size fails every other request the dynamic batcher merges "
                        "it with (%s; install a C compiler, SECURITY.md)", exc)
            return
        for model in models:
            (model / batch_guard.LIBRARY_NAME).symlink_to(library)

    def _prepare_backends(self, binary: Path) -> Path:
        """A backend folder whose python/ holds the backend library *and* this Python's stub."""
        source = binary.parent.parent
        python_dir = self._workdir / "backends" / "python"
        python_dir.mkdir(parents=True)
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        stub = source / "python_backend_stubs" / version / "triton_python_backend_stub"
        if not stub.is_file():
            raise UnsupportedPlatformError(f"nvidia-pytriton ships no Python-backend stub for Python {version}")
        process.check_libpython()
        for item in (source / "backends" / "python" / "libtriton_python.so",
                     source / "backends" / "python" / "triton_python_backend_utils.py", stub):
            (python_dir / item.name).symlink_to(item)
        return python_dir.parent

    def _derive_model(self, entry: repository.ModelEntry) -> Path:
        """The ONNX Runtime model as a Python-backend model: same tensors, batching and contract."""
        config = type(entry.config)()
        config.CopyFrom(entry.config)
        config.ClearField("platform")
        config.backend = "python"
        # Execution accelerators are ONNX Runtime (GPU) options; the Python backend rejects them.
        config.ClearField("optimization")
        # Always set, so python_model.py needs no default of its own (a missing one reads as the core's).
        threads = entry.model_config.intra_op_thread_count
        config.parameters[triton_config.THREADS_PARAMETER].string_value = str(threads)
        target = self._workdir / "models" / config.name
        target.mkdir(parents=True)
        for version in entry.versions:
            vdir = target / str(version)
            vdir.mkdir()
            (vdir / triton_config.ONNX_FILENAME).symlink_to(entry.onnx_path(version).resolve())
            shutil.copyfile(_PYTHON_MODEL, vdir / "model.py")
        shutil.copyfile(entry.path / triton_config.LABEL_FILENAME, target / triton_config.LABEL_FILENAME)
        (target / "config.pbtxt").write_text(triton_config.render(config))
        return target

    def _derive_encoded_model(self, entry: repository.EncodedEntry) -> Path:
        """A bytes model as the repository has it (it is a Python-backend model already), in the work folder."""
        target = self._workdir / "models" / entry.path.name
        shutil.copytree(entry.path, target, symlinks=False)
        return target

    def _wait_ready(self, cfg: ServerConfig) -> None:
        """Poll gRPC health until ready; raises PortInUseError or ServerError when it exits or times out."""
        import tritonclient.grpc as grpcclient
        from tritonclient.utils import InferenceServerException

        # Over TLS a plaintext health check cannot connect: Triton logs its last start-up step instead.
        tls = any(arg.startswith(("--grpc-use-ssl=true", "--grpc-use-ssl-mutual=true")) for arg in cfg.extra_args)
        deadline = time.monotonic() + cfg.startup_timeout_s
        with grpcclient.InferenceServerClient(cfg.grpc_url) as client:
            while time.monotonic() < deadline:
                if self._process.poll() is not None:
                    tail = self.log_tail()
                    error = PortInUseError if process.PORT_TAKEN_MARK in tail else ServerError
                    failures = "".join(f"{line}\n" for line in process.model_load_failures(self._log_text()))
                    raise error(f"{failures}tritonserver exited with code {self._process.returncode}:\n{tail}")
                try:
                    ready = ("Started Metrics Service" in self.log_tail()) if tls else client.is_server_ready(client_timeout=2)
                    if ready:
                        self._check_admin_key(client, cfg, tls=tls)
                        return
                except InferenceServerException:
                    pass
                time.sleep(0.25)
        raise ServerError(f"tritonserver not ready after {cfg.startup_timeout_s:.0f} s:\n{self.log_tail()}")

    def _check_admin_key(self, client, cfg: ServerConfig, *, tls: bool) -> None:
        """The restricted APIs must open with the real key: a failed preload would leave the public placeholder."""
        from tritonclient.utils import InferenceServerException

        if not cfg.restrict_admin_apis:
            return
        if "cannot be preloaded" in self.log_tail():
            raise ServerError(f"the admin-key preload library did not load:\n{self.log_tail()}")
        if tls:
            return
        try:
            client.get_log_settings(headers=self.grpc_admin_headers)
        except InferenceServerException as exc:
            raise ServerError(f"the restricted admin APIs refuse this start's key: {exc.message()}") from exc

    def log_tail(self, lines: int = 30) -> str:
        """The last ``lines`` lines of the server log ("" when there is none yet), for error messages."""
        return "\n".join(self._log_text().splitlines()[-lines:])

    def _log_text(self) -> str:
        if not self.log_path or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")

    def is_running(self) -> bool:
        """True while the tritonserver process started by :meth:`start` has not exited."""
        return self._process is not None and self._process.poll() is None

    def wait(self) -> int:
        """Block until the server exits; returns its exit code."""
        return self._process.wait() if self._process else 0

    def stop(self, *, timeout_s: float = 30.0) -> None:
        """SIGTERM the process group, SIGKILL it after ``timeout_s``, then clean up."""
        child, self._process = self._process, None
        if child is not None:
            process.signal_group(child.pid, signal.SIGTERM)
            try:
                child.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                log.warning("tritonserver ignored SIGTERM for %.0f s; killing it", timeout_s)
                child.kill()
                child.wait()
            # Stubs live in the same group; none may outlive the server.
            process.signal_group(child.pid, signal.SIGKILL)
        for region in Path("/dev/shm").glob(f"{self.shm_prefix}*"):
            region.unlink(missing_ok=True)
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None


def start_on_free_ports(model_repository: Path, **config_fields: object) -> EmbeddedTriton:
    """A started embedded Triton serving ``model_repository`` on ports the launcher picked itself.

    The one way tests and benchmarks start a private server: the caller probes no port, and
    ``server.config`` holds the ports it got (``server.config.grpc_url``). ``config_fields`` are
    further ServerConfig fields (e.g. ``allow_http=True``). Raises what ``EmbeddedTriton.start`` raises.
    """
    config = ServerConfig(Path(model_repository), http_port=0, grpc_port=0, metrics_port=0, **config_fields)
    return EmbeddedTriton(config).start()


