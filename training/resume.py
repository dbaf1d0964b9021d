"""Per-epoch checkpoints, validation scoring and early stopping that survive a killed run.

Keras' EarlyStopping forgets its best score and patience when the process dies;
this callback keeps them in ``state.json`` beside the last and best weights and
the optimizer's slots, so a restarted ``facialattr train`` continues from the
epoch after the last one that finished, with the same stopping decision.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np

log = logging.getLogger(__name__)


class PhaseState:
    """Files of one training phase (head or fine-tune) in ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.state_file = directory / "state.json"
        self.last = directory / "last.weights.h5"
        self.best = directory / "best.weights.h5"
        self.optimizer = directory / "optimizer.npz"

    def read(self) -> dict:
        """The phase's saved state (0-based last finished ``epoch``, ``best`` score and its epoch, ``wait``, ``stopped``); epoch -1 before any."""
        if self.state_file.exists():
            return json.loads(self.state_file.read_text())
        return {"epoch": -1, "best": None, "best_epoch": None, "wait": 0, "stopped": False}

    def write(self, state: dict) -> None:
        """Save ``state`` atomically (a killed run leaves the old or the new file, never half of one)."""
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        tmp.replace(self.state_file)

    def restore(self, model: keras.Model) -> int:
        """Load the last finished epoch's weights and optimizer; returns the next epoch."""
        state = self.read()
        if state["epoch"] < 0 or not self.last.exists():
            return 0
        model.load_weights(self.last)
        if self.optimizer.exists():
            opt = model.optimizer
            opt.build(model.trainable_variables)
            saved = np.load(self.optimizer)
            arrays = [saved[f"v{i}"] for i in range(len(saved.files))]
            if len(arrays) == len(opt.variables):
                for var, value in zip(opt.variables, arrays, strict=True):
                    var.assign(value)
            else:
                log.warning("optimizer state in %s does not fit; starting it fresh", self.optimizer)
        log.info("resuming %s after epoch %d", self.dir.name, state["epoch"] + 1)
        return state["epoch"] + 1


class ResumableEpochs(keras.callbacks.Callback):
    """After each epoch: score val, save last/best, decide on early stopping, persist it all."""

    def __init__(self, phase: PhaseState, score_fn: Callable[[], dict[str, float]], *,
                 monitor: str, patience: int, images_per_epoch: int = 0) -> None:
        super().__init__()
        self.phase, self.score_fn, self.monitor, self.patience = phase, score_fn, monitor, patience
        self.images_per_epoch = images_per_epoch
        self._epoch_t0 = time.monotonic()

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        """Keras hook: start the epoch's clock."""
        self._epoch_t0 = time.monotonic()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        """Keras hook: log speed and load, score val, save last (and best) weights and the optimizer, decide on early stopping.

        With the optimizer's weight EMA on, the averaged weights are the ones scored and saved as best.
        """
        # Training speed is only meaningful next to the machine's load: other jobs halve it.
        train_s = time.monotonic() - self._epoch_t0
        speed = {"train_s": round(train_s, 1), "images_per_s": round(self.images_per_epoch / max(train_s, 1e-9), 1),
                 "load_avg_1m": round(os.getloadavg()[0], 2)}
        log.info("epoch %d: %.0f s, %.1f images/s, load average %.2f", epoch + 1, train_s, speed["images_per_s"],
                 speed["load_avg_1m"])
        optimizer = self.model.optimizer
        raw = None
        if getattr(optimizer, "use_ema", False):
            # The averaged weights are scored and kept as best; training resumes from the raw ones.
            self.model.save_weights(self.phase.last)
            raw = [v.numpy() for v in self.model.trainable_variables]
            optimizer.finalize_variable_values(self.model.trainable_variables)
        scores = self.score_fn()
        if logs is not None:
            logs.update({f"val_{k}": v for k, v in scores.items()})
            logs.update(speed)
        state = self.phase.read()
        value = scores[self.monitor]
        if state["best"] is None or value > state["best"]:
            state.update(best=value, best_epoch=epoch, wait=0)
            self.model.save_weights(self.phase.best)
        else:
            state["wait"] += 1
        if raw is None:
            self.model.save_weights(self.phase.last)
        else:
            for variable, saved in zip(self.model.trainable_variables, raw, strict=True):
                variable.assign(saved)
        np.savez(self.phase.optimizer, **{f"v{i}": v.numpy() for i, v in enumerate(self.model.optimizer.variables)})
        state["epoch"] = epoch
        if state["wait"] >= self.patience:
            log.info("early stop: val %s did not improve for %d epochs", self.monitor, self.patience)
            self.model.stop_training = True
            state["stopped"] = True
        self.phase.write(state)
        log.info("epoch %d: %s (best %.4f at epoch %d)", epoch + 1,
                 ", ".join(f"{k} {v:.4f}" for k, v in scores.items()), state["best"], state["best_epoch"] + 1)
