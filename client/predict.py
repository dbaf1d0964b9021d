"""The top-k attributes of a few images: the library behind ``facialattr predict``.

The same path as ``facialattr score`` (the server's contract, :class:`Scorer`, the
pipelined decode of :func:`score_files`, the lift ranking of :func:`top_attributes`),
without a results file: :func:`predict` gives one :class:`Prediction` per input, and
:func:`format_table` / :func:`format_json` render them for people or programs.
A missing file or a non-image is an error entry naming it and the run goes on.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from facialattr.client.batching import EngineConfig
    from facialattr.client.ranking import RankedAttribute
    from facialattr.client.scorer import Scorer
    from facialattr.client.settings import ScorerSettings

TOP_K = 10


@dataclass(frozen=True)
class Prediction:
    """One input: its ranked attributes, or the error that kept it from being scored."""

    path: str
    attributes: list[RankedAttribute] | None = None
    error: str | None = None
    error_kind: str | None = None

    @property
    def ok(self) -> bool:
        """True when the image was scored (``attributes`` holds its top-k)."""
        return self.attributes is not None

    def as_dict(self) -> dict:
        """The JSON shape ``predict --json`` prints: status, and the ranked attributes or the error."""
        if not self.ok:
            return {"path": self.path, "status": "error", "error": self.error, "error_kind": self.error_kind}
        return {"path": self.path, "status": "ok", "top": [
            {"rank": i, "attribute": a.name, "probability": round(a.probability, 6), "present": a.present,
             "lift": round(a.score, 4)}
            for i, a in enumerate(self.attributes, start=1)]}


def predict(paths: Sequence[str | Path], scorer: Scorer | None = None, *, settings: ScorerSettings | None = None,
            k: int = TOP_K, engine: EngineConfig | None = None) -> list[Prediction]:
    """Score ``paths`` (files, or folders non-recursively); one :class:`Prediction` per input, in order.

    On ``scorer``, or on one opened from ``settings`` (default :class:`ScorerSettings`: the
    default URL) and closed at the end. Raises
    :class:`~facialattr.client.scorer.ServerUnavailableError` when the server stays unreachable.
    """
    from facialattr.client.batching import score_files
    from facialattr.client.paths import iter_inputs
    from facialattr.client.ranking import top_attributes
    from facialattr.client.scorer import Scorer
    from facialattr.client.settings import ScorerSettings

    if scorer is None:
        with Scorer.from_settings(settings or ScorerSettings()) as own:
            return predict(paths, own, k=k, engine=engine)
    out = []
    for result in score_files(iter_inputs(paths), scorer, config=engine):
        if result.ok:
            out.append(Prediction(result.path, attributes=top_attributes(result.probabilities, scorer.contract, k=k)))
        else:
            out.append(Prediction(result.path, error=result.error, error_kind=result.error_kind))
    return out


def format_table(predictions: Sequence[Prediction]) -> str:
    """One block per image: rank, attribute, probability, present flag (at the shipped threshold), lift."""
    blocks = []
    for p in predictions:
        if not p.ok:
            blocks.append(f"{p.path}\n  error ({p.error_kind}): {p.error}")
            continue
        width = max([len("attribute")] + [len(a.name) for a in p.attributes])
        lines = [p.path, f"  {'rank':>4}  {'attribute':<{width}}  probability  present  lift"]
        lines += [f"  {i:>4}  {a.name:<{width}}  {a.probability:>11.3f}  {'yes' if a.present else 'no':<7}  {a.score:+.2f}"
                  for i, a in enumerate(p.attributes, start=1)]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def format_json(predictions: Sequence[Prediction]) -> str:
    """The predictions as an indented JSON list, one object per input (see :meth:`Prediction.as_dict`)."""
    return json.dumps([p.as_dict() for p in predictions], indent=2, ensure_ascii=False)
