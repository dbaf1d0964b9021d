"""``facialattr serve``'s own flags reach the server and its supervisor."""

from __future__ import annotations

import pytest

from facialattr import defaults
from facialattr.app import flags
from facialattr.app.cli import build_parser


@pytest.mark.parametrize(("argv", "pool_size"), [([], 0), (["--grpc-infer-allocation-pool-size", "8"], 8)])
def test_serve_options_carry_the_grpc_allocation_pool_size_into_the_server_config(argv, pool_size):
    args = build_parser().parse_args(["serve", *argv])
    assert flags.server_config(args).grpc_infer_allocation_pool_size == pool_size


def test_the_supervisor_listens_beside_triton_s_ports_unless_told_otherwise():
    assert build_parser().parse_args(["serve"]).supervisor_port == defaults.SUPERVISOR_PORT
    assert build_parser().parse_args(["serve", "--supervisor-port", "0"]).supervisor_port == 0
