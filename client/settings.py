"""What a scoring client is told: one settings object for every engine and command that opens a :class:`Scorer`.

``score`` (both engines), ``predict``, ``watch`` and the library build a
:class:`ScorerSettings` and call :meth:`Scorer.from_settings <facialattr.client.scorer.Scorer.from_settings>`;
the Ray engine ships the same object to its actors. Each field is declared here and
nowhere else; its default comes from :mod:`facialattr.defaults`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from facialattr import MODEL_NAME, defaults
from facialattr.errors import InputError


def _default_urls() -> tuple[str, ...]:
    return (defaults.grpc_url(),)


@dataclass(frozen=True)
class ScorerSettings:
    """How a client reaches the model and how long it waits (seconds).

    ``connect_timeout_s`` bounds the wait while no endpoint has answered at all; None waits
    :data:`~facialattr.defaults.CONNECT_TIMEOUT_S`, or :data:`~facialattr.defaults.REFUSED_GRACE_S`
    when every endpoint refuses the connection (``math.inf`` waits forever). ``give_up_after_s``
    is how long a request keeps retrying a server that answered and then went away, and how long
    a server that answered but is still loading its model is waited for.
    """

    urls: tuple[str, ...] = field(default_factory=_default_urls)
    model_name: str = MODEL_NAME
    timeout_s: float = defaults.REQUEST_TIMEOUT_S
    max_in_flight: int = defaults.MAX_IN_FLIGHT
    connect_timeout_s: float | None = None
    give_up_after_s: float = defaults.GIVE_UP_AFTER_S
    server_decode: bool = False

    def __post_init__(self) -> None:
        # One URL may be given as a string; a list becomes a tuple (the settings stay hashable and frozen).
        object.__setattr__(self, "urls", (self.urls,) if isinstance(self.urls, str) else tuple(self.urls))
        if not self.urls:
            raise InputError("urls: give at least one Triton gRPC HOST:PORT")
        if self.max_in_flight < 1:
            raise InputError(f"max_in_flight must be at least 1, got {self.max_in_flight}")
        for name in ("timeout_s", "give_up_after_s", "connect_timeout_s"):
            value = getattr(self, name)
            if value is not None and (math.isnan(value) or value <= 0):
                raise InputError(f"{name} must be positive, got {value}")
