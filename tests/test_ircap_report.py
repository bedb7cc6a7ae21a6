"""Caption report: counts, token lengths, distinct shares, fact frequencies, annotation checks."""

import json

from thermgen.ircap.report import build_report, stated_time, to_markdown, write_report


def rec(i, g, f, labels=("Car", "Car"), tod="night", stated=None):
    return {"id": f"x/test/{i}", "split": "test", "global_caption": g, "fine_caption": f,
            "objects": [{"label": lab, "box": [0, 0, 1, 1], "facts": {}} for lab in labels],
            "meta": {"time_of_day": tod} if tod else {}, "stated": stated or [], "facts": []}


G1 = "An infrared thermal image of an aerial scene at night, with two cars."
G2 = "An infrared thermal image of an aerial view after dark, with two cars."
F = "Thermal infrared image at night: two cars are parked and cooled."


def test_distinct_shares_and_token_lengths():
    r = build_report([rec(0, G1, F), rec(1, G1, F), rec(2, G2, F), rec(3, G2, F)])
    s = r["summary"]
    assert s["records"] == 4 and s["distinct_global_share"] == 0.5 and s["distinct_fine_share"] == 0.25
    assert r["tokens"]["global"]["max"] == s["max_tokens_global"] <= 77
    assert sum(r["tokens"]["fine"]["histogram"]["counts"]) == 4
    assert s["over_limit"] == 0


def test_fact_frequencies_count_records_stating_each_fact():
    stated = [{"fact": "vehicle_state", "value": "parked", "objects": [0, 1]}, {"fact": "time_of_day", "value": "night"},
              {"fact": "time_of_day", "value": "night"}]
    r = build_report([rec(0, G1, F, stated=stated), rec(1, G2, F)])
    assert r["facts_stated"]["vehicle_state"] == {"records": 1, "share": 0.5, "values": {"parked": 1}}
    assert r["facts_stated"]["time_of_day"]["records"] == 1
    assert r["objects"]["with_state_claim"] == 2 and r["objects"]["total"] == 4 and r["objects"]["state_claim_share"] == 0.5


def test_checks_catch_wrong_counts_and_wrong_time_of_day():
    r = build_report([rec(0, G1, F), rec(1, G1, F, labels=("Car", "Car", "Car")), rec(2, G1, F, tod="day")])
    assert r["checks"]["counts"] == {"records": 3, "agree": 2}
    assert r["checks"]["time_of_day"] == {"with_metadata": 3, "agree": 2}
    assert any("x/test/1" in e for e in r["checks"]["examples_of_disagreement"])


def test_dontcare_boxes_are_not_expected_in_counts():
    r = build_report([rec(0, G1, F, labels=("Car", "Car", "DontCare"))])
    assert r["checks"]["counts"]["agree"] == 1 and r["objects"]["total"] == 2


def test_stated_time_reads_day_night_or_none():
    assert stated_time("... at night ...") == "night"
    assert stated_time("... by day ...") == "day"
    assert stated_time("a scene") is None
    assert stated_time("by day and at night") == "both"


def test_report_is_written_as_json_markdown_and_png(tmp_path):
    r = build_report([rec(0, G1, F), rec(1, G2, F)], extras=[{"fallback": None}, {"fallback": "invalid: colour words"}],
                     elapsed_s=2.0, backend="openai")
    j, md, png = write_report(r, tmp_path / "rep" / "caption.report.json")
    assert json.loads(j.read_text())["backend"]["fallbacks"] == 1
    text = md.read_text()
    assert "distinct global captions: **100.0%**" in text and "fallbacks to rules: 1" in text
    assert png is not None and png.read_bytes()[:4] == b"\x89PNG"
    assert to_markdown(r) == text
