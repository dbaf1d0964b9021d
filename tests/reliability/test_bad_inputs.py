"""The bad-input corpus through the client library against the real server: a correct score or a clear error row each.

The folder is listed the way ``facialattr score --recursive`` lists it, one file
is deleted after listing, and the listed paths go through the pipelined engine
(:func:`facialattr.client.batching.score_files`) on a real server. Each row of
``corpus.TABLE`` is then one test. The CLI run over the same corpus is in
test_score_command_inputs.py.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import reliability_corpus as corpus
import reliability_support as support

from facialattr.client.batching import ItemResult, score_files
from facialattr.client.paths import iter_inputs
from facialattr.client.preprocess import prepare
from facialattr.client.scorer import Scorer


@dataclass(repr=False)
class CorpusRun:
    root: Path
    listed: list[str]  # the listed paths, in walk order
    results: list[ItemResult]
    expected: dict[str, np.ndarray]  # kind -> probabilities of its reference pixels
    fifos_opened: set[bytes]

    def path_of(self, row: corpus.Row) -> bytes:
        return os.path.join(os.fsencode(self.root), row.name)

    def results_for(self, row: corpus.Row) -> list[ItemResult]:
        """The rows naming this file (or, for the over-long path, the folder that could not be read)."""
        target = self.path_of(row)
        found = [r for r in self.results if os.fsencode(r.path) == target]
        if not found and row.name.count(b"/") > 1:
            found = [r for r in self.results if target.startswith(os.fsencode(r.path).rstrip(b"/") + b"/")]
        return found


def _fifos(root: Path) -> list[bytes]:
    out = []
    for directory, _, files in os.walk(os.fsencode(root)):
        out += [os.path.join(directory, f) for f in files if stat.S_ISFIFO(os.lstat(os.path.join(directory, f)).st_mode)]
    return out


def _probabilities(scorer: Scorer, rgb: np.ndarray) -> np.ndarray:
    return scorer.infer(prepare(rgb, scorer.contract.preprocessing)[None])[0]


@pytest.fixture(scope="module")
def corpus_run(tmp_path_factory, own_server) -> CorpusRun:
    base = tmp_path_factory.mktemp("corpus")
    root = base / "scored"
    references = corpus.build(root, outside=base / "outside")
    with Scorer(own_server.config.grpc_url) as scorer:
        inputs = list(iter_inputs([root], recursive=True))
        corpus.delete_after_listing(root)
        with support.FifoWatchdog(_fifos(root)) as watchdog:
            results = list(score_files(inputs, scorer))
        expected = {kind: _probabilities(scorer, rgb) for kind, rgb in references.items() if rgb is not None}
    return CorpusRun(root, [i.path for i in inputs], results, expected, watchdog.opened)


def test_the_corpus_has_at_least_twenty_kinds_of_trouble():
    assert len({row.kind for row in corpus.TABLE}) >= 20
    assert len({row.name for row in corpus.TABLE}) == len(corpus.TABLE)


# Rows the client does not yet handle as the issue asks; proposed to the client's owner (see docs/RELIABILITY.md).
@pytest.mark.parametrize("row", [pytest.param(row, id=row.kind) for row in corpus.TABLE])
def test_each_input_becomes_a_correct_score_or_an_error_row_with_a_clear_reason(row, corpus_run):
    if reason := corpus.skip_reason(row):
        pytest.skip(reason)
    assert corpus_run.path_of(row) not in corpus_run.fifos_opened, (
        f"{row.display_name}: the scorer opened a FIFO for reading, which blocks forever (the test unblocked it)")
    found = corpus_run.results_for(row)
    assert len(found) == 1, f"{row.kind}: expected exactly one output row, got {len(found)} (silently dropped?)"
    (result,) = found
    if row.status == corpus.OK:
        assert result.ok, f"{row.kind}: {result.error}"
        np.testing.assert_allclose(result.probabilities, corpus_run.expected[row.kind], atol=row.tolerance)
    else:
        assert not result.ok, f"{row.kind}: scored, but it should be an error row ({row.reason})"
        assert row.reason.lower() in result.error.lower()
        assert os.fsdecode(os.path.basename(os.fsencode(result.path))) in result.error, "the reason must name the file"


def test_every_listed_file_gets_exactly_one_row_in_input_order(corpus_run):
    assert [r.path for r in corpus_run.results] == corpus_run.listed


def test_a_folder_named_like_an_image_is_walked_not_read(corpus_run):
    folder = os.path.join(os.fsencode(corpus_run.root), corpus.DIRECTORY_NAMED_LIKE_AN_IMAGE)
    rows = {os.fsencode(r.path): r for r in corpus_run.results}
    assert folder not in rows
    inner = rows[os.path.join(folder, b"inner.jpg")]
    np.testing.assert_allclose(inner.probabilities, corpus_run.expected["plain JPEG (control)"], atol=1e-4)


def test_the_reference_scores_can_tell_a_wrongly_oriented_image(corpus_run, own_server):
    """The EXIF row proves something: scoring the stored (unrotated) pixels gives a clearly different answer."""
    row = next(r for r in corpus.TABLE if r.kind == "EXIF-rotated JPEG")
    stored = corpus.decode_jpeg_as_tensorflow(Path(os.fsdecode(corpus_run.path_of(row))).read_bytes())
    with Scorer(own_server.config.grpc_url) as scorer:
        unrotated = _probabilities(scorer, stored)
    assert np.abs(unrotated - corpus_run.expected[row.kind]).max() > 50 * row.tolerance
