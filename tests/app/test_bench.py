"""``facialattr bench`` measures one endpoint: a second --url is a usage error, before anything is measured or written."""

from __future__ import annotations

import pytest

from facialattr.app.cli import main
from facialattr.errors import EXIT_USAGE


def test_a_second_url_is_a_usage_error_naming_both_and_nothing_is_written(tmp_path, capsys):
    out = tmp_path / "bench"
    with pytest.raises(SystemExit) as exit_:
        main(["bench", "--url", "a.example:9001", "--url", "b.example:9001", "--out", str(out)])
    assert exit_.value.code == EXIT_USAGE
    assert "the sweep measures one endpoint: give --url once (got 2: a.example:9001, b.example:9001)" \
        in capsys.readouterr().err
    assert not out.exists()
