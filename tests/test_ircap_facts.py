"""IR-Cap fact rules: each fact keeps its evidence; undecidable inputs yield no fact."""

import numpy as np

from thermgen.ircap.facts import infer_facts, object_facts, scene_facts
from thermgen.ircap.measure import measure_image


def _names(facts):
    return {f.name: f.value for f in facts}


def _obj(**kw):
    base = {"measurable": True, "box": [10, 10, 30, 20], "contrast_rel": 0.0, "hi_rel": 0.0, "lo_rel": 0.0,
            "top_rel": 0.0, "top_z": 0.0, "peak_rel": 0.05, "hotspot_offset": 0.1, "hotspot": [0.5, 0.5]}
    base.update(kw)
    return base


WARM_CAR_SPOT = _obj(contrast_rel=0.3, hi_rel=0.6, lo_rel=0.1, top_rel=0.9, top_z=20, peak_rel=0.6,
                     hotspot_offset=0.8, hotspot=[0.9, 0.5])


def test_warm_car_with_off_centre_hot_spot_at_night_is_running():
    facts = _names(object_facts(0, "Car", WARM_CAR_SPOT, {"time_of_day": "night"}))
    assert facts["polarity"] == "warm" and facts["vehicle_state"] == "running"
    assert facts["heat_distribution"] == "hot_spot"


def test_warm_car_in_daylight_on_agc_data_gets_no_motion_claim():
    # Sun-heated metal is warm too: without kelvin the motion state is undecidable.
    facts = _names(object_facts(0, "Car", WARM_CAR_SPOT, {"time_of_day": "day"}))
    assert "vehicle_state" not in facts and facts["polarity"] == "warm"


def test_warm_car_in_daylight_with_kelvin_evidence_is_running():
    m = dict(WARM_CAR_SPOT, top_k=12.0)
    assert _names(object_facts(0, "Car", m, {"time_of_day": "day"}))["vehicle_state"] == "running"


COLD_CAR = _obj(contrast_rel=-0.2, hi_rel=0.05, lo_rel=-0.4, top_rel=0.1)


def test_car_at_or_below_surroundings_at_night_is_parked_and_keeps_its_evidence():
    facts = object_facts(0, "Car", COLD_CAR, {"time_of_day": "night"})
    state = next(f for f in facts if f.name == "vehicle_state")
    assert state.value == "parked" and state.evidence["contrast_rel"] == -0.2 and state.rule


def test_car_below_sun_heated_pavement_gets_no_parked_claim():
    # By day a cool car body says nothing about its engine; without time of day neither.
    assert "vehicle_state" not in _names(object_facts(0, "Car", COLD_CAR, {"time_of_day": "day"}))
    assert "vehicle_state" not in _names(object_facts(0, "Car", COLD_CAR, {}))


def test_radiometric_hot_part_vetoes_a_parked_claim():
    m = dict(COLD_CAR, top_k=6.0)
    assert "vehicle_state" not in _names(object_facts(0, "Car", m, {"time_of_day": "night"}))


def test_tiny_boxes_get_no_state_claim():
    m = dict(COLD_CAR, box=[0, 0, 5, 5])
    assert "vehicle_state" not in _names(object_facts(0, "Car", m, {"time_of_day": "night"}))


def test_car_between_thresholds_gets_no_state():
    facts = _names(object_facts(0, "Car", _obj(contrast_rel=0.06, hi_rel=0.25, lo_rel=-0.2), {}))
    assert "vehicle_state" not in facts and "polarity" not in facts


def test_small_warm_person_in_a_loose_box_is_warm():
    m = _obj(contrast_rel=0.0, hi_rel=0.2, lo_rel=-0.1, top_rel=0.7, top_z=9.0, peak_rel=0.7)
    assert _names(object_facts(0, "Person", m, {"time_of_day": "night"}))["person_heat"] == "warm"


def test_unmeasurable_object_gets_no_facts():
    m = _obj(contrast_rel=None, hi_rel=None, lo_rel=None, top_rel=None, top_z=None)
    assert object_facts(0, "Car", m, {"time_of_day": "night"}) == []
    assert object_facts(0, "Car", {"measurable": False, "box": [0, 0, 1, 1]}, {}) == []


def test_dontcare_regions_get_no_facts():
    assert object_facts(0, "DontCare", WARM_CAR_SPOT, {}) == []


def _meas(spread=0.4, top_median=0.5, top_sigma=0.05, sigma=0.1, p5=0.2, hot=0.0):
    return {"image": {"spread": spread, "p5": p5, "sigma": sigma, "hot_fraction": hot,
                      "top_band": {"median": top_median, "sigma": top_sigma}}, "objects": []}


def test_scene_metadata_is_copied_only_when_present():
    assert "time_of_day" not in _names(scene_facts(_meas(), {}))
    f = _names(scene_facts(_meas(), {"time_of_day": "night", "weather": "clear", "altitude_m": 60, "view_angle_deg": 90}))
    assert f["time_of_day"] == "night" and f["view"] == "nadir" and f["altitude"] == 60.0


def test_rain_gives_wet_surface_and_explains_low_contrast():
    facts = scene_facts(_meas(spread=0.1), {"weather": "rain"})
    by = {f.name: f for f in facts}
    assert by["wet_surface"].value is True
    assert by["contrast"].value == "low" and by["contrast"].evidence["cause"] == "rain"


def test_low_contrast_without_a_known_cause_states_no_cause():
    by = {f.name: f for f in scene_facts(_meas(spread=0.1), {"weather": "clear"})}
    assert by["contrast"].evidence["cause"] is None


def test_cold_uniform_top_band_in_an_oblique_view_is_cold_sky():
    m = _meas(top_median=0.21, top_sigma=0.005, sigma=0.1, p5=0.2)
    assert _names(scene_facts(m, {"view_angle_deg": 10}))["cold_sky"] is True
    assert "cold_sky" not in _names(scene_facts(m, {"view_angle_deg": 90}))  # nadir: no horizon in view
    warm_top = _meas(top_median=0.5, top_sigma=0.005)
    assert "cold_sky" not in _names(scene_facts(warm_top, {"view_angle_deg": 10}))


def test_infer_facts_on_pixels_end_to_end():
    img = np.full((96, 128), 0.35, np.float32) + np.random.default_rng(0).normal(0, 0.004, (96, 128)).astype(np.float32)
    img[:, :10] = np.linspace(0.1, 0.9, 96)[:, None]
    img[40:50, 60:64] = 0.8  # a warm person
    img[20:36, 90:120] = 0.25  # a cold parked car
    meas = measure_image(img, [[58, 38, 8, 14], [90, 20, 30, 16]])
    scene, objs = infer_facts(meas, ["Person", "Car"], {"time_of_day": "night"})
    assert _names(objs[0])["person_heat"] == "warm"
    assert _names(objs[1])["vehicle_state"] == "parked"
