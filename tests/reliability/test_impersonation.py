"""Another local user cannot take the server's port while the supervisor restarts tritonserver.

Issue 27's attack: make the server restart, bind 127.0.0.1:PORT in the gap (a loop retrying every
10 ms as user ``nobody``), answer the clients as Triton. Here the server is killed with SIGKILL
while the attacker loops; it must never bind, and the scoring run afterwards gets only the real
server's answers.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import reliability_corpus as corpus
from testsupport import start_serve_command, wait_until

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                                reason="acting as another user needs root and setpriv")

# Binds the port in every form every 10 ms until SIGTERM; prints how often it tried and what it got.
_ATTACKER = """
import signal, socket, sys, time
port, tries, bound = int(sys.argv[1]), 0, []
signal.signal(signal.SIGTERM, lambda *a: (print(tries, ";".join(bound)), sys.exit(0)))
forms = [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")]
keep = []
while True:
    for family, address in forms:
        if address in bound:  # one socket per address is all an impostor needs
            continue
        s = socket.socket(family)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            s.bind((address, port))
            s.listen(16)
            bound.append(address)
            keep.append(s)  # an impostor keeps what it got
        except OSError:
            s.close()
    tries += 1
    time.sleep(0.01)
"""


def _tritonserver_pid(grpc_port: int) -> int:
    found = subprocess.run(["pgrep", "-f", f"grpc-port={grpc_port}"], capture_output=True, text=True).stdout.split()
    return int(found[0])


def _ready(url: str) -> bool:
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url)
    try:
        return client.is_model_ready("facial_attributes")
    except Exception:  # noqa: BLE001 - down or restarting: not ready
        return False
    finally:
        client.close()


@pytest.mark.slow
def test_another_user_never_binds_the_port_during_a_restart_and_scores_come_from_the_real_server(
        tmp_path, tiny_repository):
    (tmp_path / "in").mkdir()
    for i in range(40):
        (tmp_path / "in" / f"img{i:03d}.jpg").write_bytes(corpus.encode(corpus.picture(60, 50, seed=i), "JPEG"))
    serve, grpc_port = start_serve_command(tiny_repository)
    url = f"127.0.0.1:{grpc_port}"
    attacker = subprocess.Popen([*NOBODY, sys.executable, "-c", _ATTACKER, str(grpc_port)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(0.5)
        first = _tritonserver_pid(grpc_port)
        os.kill(first, signal.SIGKILL)
        wait_until(lambda: not _ready(url), timeout_s=30, what="the killed server to stop answering")
        wait_until(lambda: _ready(url), timeout_s=180, interval_s=0.5, what="the supervisor's restart")
        assert _tritonserver_pid(grpc_port) != first
        out = tmp_path / "scores.jsonl"
        run = subprocess.run([sys.executable, "-m", "facialattr.app.cli", "score", str(tmp_path / "in"),
                              "--out", str(out), "--url", url, "--no-progress"], capture_output=True, text=True,
                             timeout=300)
        assert run.returncode == 0, run.stderr[-2000:]
    finally:
        attacker.send_signal(signal.SIGTERM)
        said, complaint = attacker.communicate(timeout=30)
        serve.send_signal(signal.SIGTERM)
        serve.wait(timeout=60)
        tries, _, bound = said.strip().partition(" ")
        assert bound == "", f"another user bound the server's port: {bound}"
    assert tries.isdigit() and int(tries) > 100, f"the attacker's loop did not run through the restart: {complaint}"
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 40 and all(r["status"] == "ok" for r in rows)
    names, expected = _onnx_runtime_probabilities(tiny_repository, [r["path"] for r in rows])
    got = np.array([[r[name] for name in names] for r in rows], dtype=np.float32)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def _onnx_runtime_probabilities(repo, paths):
    """The served model's file run directly: what a real server answers for ``paths``."""
    from facialattr import repository
    from facialattr.client.preprocess import load_and_prepare
    from facialattr.onnx_runtime import cpu_session

    entry = repository.load_model(repo)
    served = entry.served
    batch = np.stack([load_and_prepare(p, served.contract.preprocessing) for p in paths])
    out = cpu_session(entry.onnx_path()).run([served.config.output_name], {served.config.input_name: batch})[0]
    return served.contract.attribute_names, out
