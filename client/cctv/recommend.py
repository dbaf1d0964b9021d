"""From a track's attributes to a nearby open provider of a matching service.

Rules (YAML) map attributes with probability thresholds to service categories;
the catalogue (CSV: name, category, latitude, longitude, optional opening_hours)
lists providers; each camera has a location. A recommendation names the nearest
provider of the category that is open now and its great-circle distance.
"""

from __future__ import annotations

import csv
import datetime as dt
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from facialattr.errors import InputError

EARTH_RADIUS_KM = 6371.0088
_DAYS = ("Mo", "Tu", "We", "Th", "Fr", "Sa", "Su")


def sample_rules_path() -> Path:
    """The example rules file shipped with the package (``facialattr watch`` default)."""
    return Path(str(resources.files("facialattr.client.cctv") / "sample_rules.yaml"))


def sample_catalogue_path() -> Path:
    """The example provider catalogue (CSV) shipped with the package."""
    return Path(str(resources.files("facialattr.client.cctv") / "sample_providers.csv"))


def sample_cameras_path() -> Path:
    """The example camera locations (YAML) shipped with the package."""
    return Path(str(resources.files("facialattr.client.cctv") / "sample_cameras.yaml"))


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in km between two points given in degrees (latitude, longitude)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


@dataclass(frozen=True)
class Rule:
    """Recommend ``category`` when any attribute of ``when_any`` reaches its probability threshold."""

    category: str
    # Any one attribute at or above its threshold triggers the rule.
    when_any: Mapping[str, float]


@dataclass(frozen=True)
class OpeningHours:
    """``Mo-Fr 09:00-18:00; Sa 10:00-14:00`` style; an interval ending before it starts runs past midnight."""

    intervals: tuple[tuple[frozenset[int], int, int], ...]  # (weekdays, start minute, end minute)

    @classmethod
    def parse(cls, text: str) -> OpeningHours | None:
        """None means always open (empty field or ``24/7``)."""
        text = (text or "").strip()
        if not text or text == "24/7":
            return None
        intervals = []
        for part in filter(None, (p.strip() for p in text.split(";"))):
            m = re.fullmatch(r"(?:([A-Za-z ,\-]+)\s+)?(\d\d):(\d\d)-(\d\d):(\d\d)", part)
            if not m:
                raise InputError(f"opening hours {part!r}: expected e.g. 'Mo-Fr 09:00-18:00'")
            days = _parse_days(m.group(1)) if m.group(1) else frozenset(range(7))
            start, end = int(m.group(2)) * 60 + int(m.group(3)), int(m.group(4)) * 60 + int(m.group(5))
            intervals.append((days, start, end))
        return cls(tuple(intervals))

    def is_open(self, when: dt.datetime) -> bool:
        """True when ``when`` falls in one of the intervals (to the minute; its weekday and clock time as given)."""
        day, minute = when.weekday(), when.hour * 60 + when.minute
        for days, start, end in self.intervals:
            if start < end and day in days and start <= minute < end:
                return True
            # Past midnight: the evening part belongs to today, the early part to yesterday's opening.
            if end <= start and ((day in days and minute >= start) or ((day - 1) % 7 in days and minute < end)):
                return True
        return False


def _parse_days(text: str) -> frozenset[int]:
    days: set[int] = set()
    for item in filter(None, (t.strip() for t in text.split(","))):
        ends = [e.strip()[:2].title() for e in item.split("-")]
        if not all(e in _DAYS for e in ends) or len(ends) > 2:
            raise InputError(f"opening days {item!r}: use Mo Tu We Th Fr Sa Su, ranges like Mo-Fr")
        first, last = _DAYS.index(ends[0]), _DAYS.index(ends[-1])
        days.update(range(first, last + 1) if first <= last else [*range(first, 7), *range(0, last + 1)])
    return frozenset(days)


@dataclass(frozen=True)
class Provider:
    """A place that serves one recommendation ``category``: position in degrees, opening hours (None: always open)."""

    name: str
    category: str
    latitude: float
    longitude: float
    hours: OpeningHours | None = None

    def is_open(self, when: dt.datetime) -> bool:
        """True when open at ``when``; a provider without opening hours is always open."""
        return self.hours is None or self.hours.is_open(when)


@dataclass(frozen=True)
class Recommendation:
    """One recommendation for a track: the attribute that triggered it and the nearest open provider.

    ``provider``, ``distance_km`` and the position are None when the camera has no location.
    """

    category: str
    triggered_by: str
    provider: str | None
    distance_km: float | None
    latitude: float | None = None
    longitude: float | None = None

    def to_json(self) -> dict:
        """The event's JSON form: distance rounded to metres, the provider's position only when there is one."""
        d = {"category": self.category, "triggered_by": self.triggered_by, "provider": self.provider,
             "distance_km": None if self.distance_km is None else round(self.distance_km, 3)}
        if self.provider is not None:
            d.update(latitude=self.latitude, longitude=self.longitude)
        return d


@dataclass(frozen=True)
class RuleSet:
    """The rules from a rules file, in file order, and how often a track must be scored before any applies."""

    rules: tuple[Rule, ...]
    # A track must have been scored this often before it gets recommendations.
    min_times_scored: int = 1


def load_rules(path: Path, attribute_names: Sequence[str]) -> RuleSet:
    """Read a YAML rules file (``rules: [{category, when_any: {attribute: threshold}}]``).

    Raises InputError naming the file and rule when it is unreadable, names an unknown attribute
    or a threshold outside (0, 1).
    """
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise InputError(f"{path}: cannot read rules: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("rules"), list):
        raise InputError(f"{path}: expected a mapping with a 'rules' list")
    rules = []
    for i, item in enumerate(data["rules"]):
        if not isinstance(item, dict) or not isinstance(item.get("category"), str) or not isinstance(item.get("when_any"), dict):
            raise InputError(f"{path}: rule {i + 1} needs 'category' and a 'when_any' mapping of attribute: threshold")
        for name, threshold in item["when_any"].items():
            if str(name) not in attribute_names:
                raise InputError(f"{path}: rule {i + 1} names unknown attribute {name!r}")
            if not isinstance(threshold, (int, float)) or not 0 < threshold < 1:
                raise InputError(f"{path}: rule {i + 1}: threshold of {name} must lie strictly between 0 and 1")
        rules.append(Rule(item["category"], {str(k): float(v) for k, v in item["when_any"].items()}))
    min_times = data.get("min_times_scored", 1)
    if not isinstance(min_times, int) or min_times < 1:
        raise InputError(f"{path}: min_times_scored must be a whole number >= 1")
    return RuleSet(tuple(rules), min_times)


def load_catalogue(path: Path) -> list[Provider]:
    """Read a provider CSV (name, category, latitude, longitude, optional opening_hours).

    Raises InputError naming the file and line of a bad row.
    """
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except OSError as exc:
        raise InputError(f"{path}: cannot read provider catalogue: {exc}") from exc
    providers = []
    for line, row in enumerate(rows, start=2):
        try:
            providers.append(Provider(row["name"].strip(), row["category"].strip(), float(row["latitude"]),
                                      float(row["longitude"]), OpeningHours.parse(row.get("opening_hours") or "")))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise InputError(f"{path}:{line}: needs name, category, latitude, longitude ({exc})") from exc
    return providers


class Recommender:
    """Applies the rules to a track's averaged probabilities; debouncing is the caller's set of categories."""

    def __init__(self, rules: RuleSet, providers: Sequence[Provider], attribute_names: Sequence[str]) -> None:
        self.rules = list(rules.rules)
        self.min_times_scored = rules.min_times_scored
        self.providers = list(providers)
        self._index = {name: i for i, name in enumerate(attribute_names)}

    def recommend(self, probabilities: np.ndarray, *, location: tuple[float, float] | None, when: dt.datetime,
                  already: set[str] | frozenset[str] = frozenset()) -> list[Recommendation]:
        """New recommendations for one track's averaged probabilities (one per attribute, contract order).

        At most one per category, skipping categories in ``already``; with a ``location`` (degrees) only
        categories with a provider open at ``when`` count, each with its nearest one.
        """
        out = []
        for rule in self.rules:
            if rule.category in already or any(r.category == rule.category for r in out):
                continue
            trigger = next((a for a, t in rule.when_any.items() if probabilities[self._index[a]] >= t), None)
            if trigger is None:
                continue
            rec = self._nearest_open(rule.category, trigger, location, when)
            if rec is not None:
                out.append(rec)
        return out

    def _nearest_open(self, category: str, trigger: str, location: tuple[float, float] | None,
                      when: dt.datetime) -> Recommendation | None:
        if location is None:
            return Recommendation(category, trigger, None, None)
        best = None
        for p in self.providers:
            if p.category == category and p.is_open(when):
                d = haversine_km(location[0], location[1], p.latitude, p.longitude)
                if best is None or d < best[0]:
                    best = (d, p)
        if best is None:
            return None  # nothing open now: try again at the next scoring
        d, p = best
        return Recommendation(category, trigger, p.name, d, p.latitude, p.longitude)


def parse_camera_location(text: str) -> tuple[str, tuple[float, float]]:
    """``NAME=LAT,LON``."""
    m = re.fullmatch(r"([^=]+)=\s*(-?[\d.]+)\s*,\s*(-?[\d.]+)\s*", text)
    if not m:
        raise InputError(f"--camera {text!r}: expected NAME=LAT,LON")
    lat, lon = float(m.group(2)), float(m.group(3))
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise InputError(f"--camera {text!r}: latitude must be in [-90, 90], longitude in [-180, 180]")
    return m.group(1).strip(), (lat, lon)


def load_cameras(path: Path) -> dict[str, tuple[float, float]]:
    """A YAML mapping ``cameras: {NAME: {latitude: .., longitude: ..}}``."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text())
        return {str(name): (float(v["latitude"]), float(v["longitude"])) for name, v in data["cameras"].items()}
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise InputError(f"{path}: expected 'cameras: {{NAME: {{latitude: .., longitude: ..}}}}' ({exc})") from exc
