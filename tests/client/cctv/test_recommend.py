"""Rules, catalogue, opening hours and distances of the recommender."""

import datetime as dt

import numpy as np
import pytest

from facialattr.client.cctv import recommend
from facialattr.client.cctv.recommend import OpeningHours, Recommender, haversine_km
from facialattr.contract import CELEBA_ATTRIBUTES
from facialattr.errors import InputError

MONDAY_NOON = dt.datetime(2026, 11, 30, 12, 0)


@pytest.mark.parametrize(
    "a, b, km",
    [((0, 0), (0, 1), 111.195), ((47.3769, 8.5417), (46.9480, 7.4474), 95.5), ((10, 20), (10, 20), 0.0),
     ((0, 179.5), (0, -179.5), 111.195)],
)
def test_haversine_distance_matches_known_values(a, b, km):
    assert haversine_km(*a, *b) == pytest.approx(km, abs=0.5)


@pytest.mark.parametrize(
    "hours, when, is_open",
    [
        ("Mo-Fr 09:00-18:00", MONDAY_NOON, True),
        ("Mo-Fr 09:00-18:00", MONDAY_NOON.replace(hour=18), False),
        ("Mo-Fr 09:00-18:00", MONDAY_NOON + dt.timedelta(days=5), False),  # Saturday
        ("Mo-Fr 09:00-18:00; Sa 10:00-14:00", MONDAY_NOON + dt.timedelta(days=5), True),
        ("Sa-Mo 10:00-14:00", MONDAY_NOON, True),  # a range wrapping over the weekend
        ("Fr 22:00-02:00", MONDAY_NOON.replace(hour=1) + dt.timedelta(days=5), True),  # Saturday 01:00
        ("Fr 22:00-02:00", MONDAY_NOON.replace(hour=1) + dt.timedelta(days=4), False),  # Friday 01:00
        ("08:00-20:00", MONDAY_NOON + dt.timedelta(days=6), True),  # no days: every day
    ],
)
def test_opening_hours_decide_if_a_provider_is_open(hours, when, is_open):
    assert OpeningHours.parse(hours).is_open(when) is is_open


@pytest.mark.parametrize("text", ["", "24/7", "  "])
def test_empty_or_round_the_clock_hours_mean_always_open(text):
    assert OpeningHours.parse(text) is None


@pytest.mark.parametrize("text", ["Mo-Fr 9-18", "Xy 09:00-10:00", "Mo-Fr"])
def test_malformed_opening_hours_are_rejected_with_the_offending_text(text):
    with pytest.raises(InputError, match="opening"):
        OpeningHours.parse(text)


def _write(tmp_path, rules_yaml, catalogue_csv):
    (tmp_path / "rules.yaml").write_text(rules_yaml)
    (tmp_path / "providers.csv").write_text(catalogue_csv)
    rules = recommend.load_rules(tmp_path / "rules.yaml", CELEBA_ATTRIBUTES)
    return Recommender(rules, recommend.load_catalogue(tmp_path / "providers.csv"), CELEBA_ATTRIBUTES)


RULES = """
rules:
  - category: barber
    when_any: {Goatee: 0.6, Mustache: 0.7}
  - category: optician
    when_any: {Eyeglasses: 0.5}
"""
CATALOGUE = """name,category,latitude,longitude,opening_hours
Near closed,barber,0.0,0.01,Sa 10:00-12:00
Near open,barber,0.0,0.02,Mo-Fr 09:00-18:00
Far open,barber,0.0,0.5,
Glasses,optician,0.0,-0.1,24/7
"""


def probs(**values):
    p = np.full(len(CELEBA_ATTRIBUTES), 0.1)
    for name, v in values.items():
        p[CELEBA_ATTRIBUTES.index(name.lstrip("_"))] = v
    return p


@pytest.mark.parametrize(
    "values, expected",
    [
        ({}, []),
        ({"Goatee": 0.65}, [("barber", "Goatee", "Near open")]),
        ({"Goatee": 0.55, "Mustache": 0.69}, []),  # each below its own threshold
        ({"Mustache": 0.7, "Eyeglasses": 0.9}, [("barber", "Mustache", "Near open"), ("optician", "Eyeglasses", "Glasses")]),
    ],
)
def test_rules_pick_the_nearest_open_provider_of_each_triggered_category(tmp_path, values, expected):
    rec = _write(tmp_path, RULES, CATALOGUE)
    out = rec.recommend(probs(**values), location=(0.0, 0.0), when=MONDAY_NOON)
    assert [(r.category, r.triggered_by, r.provider) for r in out] == expected
    for r in out:
        assert r.distance_km == pytest.approx(haversine_km(0, 0, r.latitude, r.longitude))


def test_categories_already_recommended_to_a_track_are_not_repeated(tmp_path):
    rec = _write(tmp_path, RULES, CATALOGUE)
    out = rec.recommend(probs(Goatee=0.9, Eyeglasses=0.9), location=(0, 0), when=MONDAY_NOON, already={"barber"})
    assert [r.category for r in out] == ["optician"]


def test_nothing_is_recommended_when_no_provider_of_the_category_is_open(tmp_path):
    rec = _write(tmp_path, RULES, "name,category,latitude,longitude,opening_hours\nA,barber,0,0,Sa 10:00-12:00\n")
    assert rec.recommend(probs(Goatee=0.9), location=(0, 0), when=MONDAY_NOON) == []


def test_camera_without_location_gets_the_category_but_no_provider(tmp_path):
    rec = _write(tmp_path, RULES, CATALOGUE)
    [r] = rec.recommend(probs(Goatee=0.9), location=None, when=MONDAY_NOON)
    assert (r.category, r.provider, r.distance_km) == ("barber", None, None)


@pytest.mark.parametrize(
    "rules_yaml, message",
    [
        ("rules: [{category: x, when_any: {Not_An_Attribute: 0.5}}]", "unknown attribute"),
        ("rules: [{category: x, when_any: {Goatee: 1.5}}]", "strictly between"),
        ("rules: [{when_any: {Goatee: 0.5}}]", "needs 'category'"),
        ("just text", "'rules' list"),
        ("rules: []\nmin_times_scored: 0", "min_times_scored"),
    ],
)
def test_invalid_rules_files_are_rejected_with_a_clear_message(tmp_path, rules_yaml, message):
    (tmp_path / "r.yaml").write_text(rules_yaml)
    with pytest.raises(InputError, match=message):
        recommend.load_rules(tmp_path / "r.yaml", CELEBA_ATTRIBUTES)


def test_catalogue_row_with_bad_coordinates_is_rejected_naming_its_line(tmp_path):
    (tmp_path / "p.csv").write_text("name,category,latitude,longitude\nA,spa,north,8.5\n")
    with pytest.raises(InputError, match=r"p.csv:2"):
        recommend.load_catalogue(tmp_path / "p.csv")


def test_shipped_sample_rules_and_catalogue_load_and_cover_every_rule_category():
    rules = recommend.load_rules(recommend.sample_rules_path(), CELEBA_ATTRIBUTES)
    providers = recommend.load_catalogue(recommend.sample_catalogue_path())
    assert {r.category for r in rules.rules} <= {p.category for p in providers}
    assert all("fictional" in p.name for p in providers)


@pytest.mark.parametrize(
    "text, expected",
    [("lobby=47.37,8.54", ("lobby", (47.37, 8.54))), ("door 2 = -33.9, 151.2", ("door 2", (-33.9, 151.2)))],
)
def test_camera_locations_parse_from_name_equals_lat_lon(text, expected):
    assert recommend.parse_camera_location(text) == expected


@pytest.mark.parametrize("text", ["lobby", "lobby=47.3", "lobby=95,8", "lobby=47,200"])
def test_bad_camera_locations_are_rejected(text):
    with pytest.raises(InputError):
        recommend.parse_camera_location(text)


def test_shipped_sample_cameras_load():
    assert set(recommend.load_cameras(recommend.sample_cameras_path())) == {"lobby", "door", "platform"}


def test_cameras_yaml_gives_each_camera_its_location(tmp_path):
    (tmp_path / "c.yaml").write_text("cameras:\n  lobby: {latitude: 47.1, longitude: 8.2}\n  door: {latitude: 1, longitude: 2}\n")
    assert recommend.load_cameras(tmp_path / "c.yaml") == {"lobby": (47.1, 8.2), "door": (1.0, 2.0)}
