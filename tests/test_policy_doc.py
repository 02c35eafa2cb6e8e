"""The flat policy document: 422 rules naming the field, RFC 7386 merge patch, PUT defaults,
and the round trip document_of(apply_document(config, doc)) == doc."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from autoscaler.policy_doc import (
    POLICY_FIELDS,
    PolicyDocument,
    PolicyInvalid,
    PolicyPatch,
    apply_document,
    document_of,
    merge_patch,
    validate_document,
)
from autoscaler.settings import Settings
from forecasting.registry import model_names
from policies.predictive import PredictiveConfig

CORE = PredictiveConfig()  # the defaults a PUT falls back to


def target(**overrides):
    spec = {"namespace": "team-a", "name": "llm", "queries": {"request_rate": "up"},
            **overrides}
    return Settings(tick_s=30.0, targets=[spec]).targets_config()[0]


def test_fields_are_the_core_config_without_tick_plus_mode_and_dry_run():
    core = {f.name for f in dataclasses.fields(PredictiveConfig)}
    assert set(POLICY_FIELDS) == (core - {"tick_s"}) | {"mode", "dry_run"}
    assert len(POLICY_FIELDS) == len(set(POLICY_FIELDS))


# -- PUT: missing fields take the defaults ------------------------------------------------

def test_empty_put_is_every_default():
    doc = validate_document({})
    assert set(doc) == set(POLICY_FIELDS)
    for name in POLICY_FIELDS:
        if name == "mode":
            assert doc[name] == "floor"
        elif name == "dry_run":
            assert doc[name] is False
        else:
            expected = getattr(CORE, name)
            assert doc[name] == (list(expected) if isinstance(expected, tuple) else expected)
    assert doc["quantile"] == 0.97 and doc["forecaster"] == "auto"


def test_put_replaces_everything_not_named_with_defaults():
    # A target configured with non-default values: a PUT naming only quantile resets the rest.
    config = target(mode="metric", policy={"min_replicas": 3, "forecaster": "stl"})
    running = document_of(config)
    assert running["min_replicas"] == 3 and running["mode"] == "metric"
    doc = validate_document({"quantile": 0.9})
    new = apply_document(config, doc)
    assert new.policy.quantile == 0.9
    assert new.policy.min_replicas == 1 and new.policy.forecaster == "auto"
    assert new.mode == "floor"
    assert new.policy.tick_s == 30.0  # the loop's tick, never the document's


def test_integers_and_integral_floats_are_normalized():
    doc = validate_document({"capacity_rps_per_replica": 250, "max_replicas": 40.0})
    assert doc["capacity_rps_per_replica"] == 250.0
    assert isinstance(doc["capacity_rps_per_replica"], float)
    assert doc["max_replicas"] == 40 and isinstance(doc["max_replicas"], int)


# -- 422 rules: each names its field -------------------------------------------------------

INVALID = [
    pytest.param({"quantil": 0.9}, "quantil", "unknown", id="unknown-field"),
    pytest.param({"tick_s": 10}, "tick_s", "unknown", id="tick-is-not-the-apis"),
    pytest.param({"quantile": 95}, "quantile", "0.95", id="quantile-percent-not-fraction"),
    pytest.param({"quantile": 0.3}, "quantile", ">= 0.5", id="quantile-below-half"),
    pytest.param({"quantile": 1.0}, "quantile", "< 1", id="quantile-one"),
    pytest.param({"quantile": "0.95"}, "quantile", "number", id="quantile-string"),
    pytest.param({"target_utilization": 70}, "target_utilization", "0.7",
                 id="utilization-percent"),
    pytest.param({"target_utilization": 0}, "target_utilization", "> 0",
                 id="utilization-zero"),
    pytest.param({"min_replicas": 5, "max_replicas": 3}, "min_replicas", "max_replicas",
                 id="min-above-max"),
    pytest.param({"max_replicas": 0}, "max_replicas", ">= 1", id="max-zero"),
    pytest.param({"min_replicas": -1}, "min_replicas", ">= 0", id="min-negative"),
    pytest.param({"min_replicas": 1.5}, "min_replicas", "integer", id="min-fractional"),
    pytest.param({"min_replicas": True}, "min_replicas", "boolean", id="bool-as-int"),
    pytest.param({"forecaster": "prophet"}, "forecaster", "unknown", id="unknown-forecaster"),
    pytest.param({"forecaster": None}, "forecaster", "null", id="forecaster-null"),
    pytest.param({"mode": "hpa"}, "mode", "floor", id="unknown-mode"),
    pytest.param({"dry_run": "yes"}, "dry_run", "boolean", id="dry-run-string"),
    pytest.param({"trend_floor": 1}, "trend_floor", "boolean", id="trend-floor-int"),
    pytest.param({"lead_time_s": -60}, "lead_time_s", ">= 0", id="negative-lead-time"),
    pytest.param({"scale_down_window_s": -1}, "scale_down_window_s", ">= 0",
                 id="negative-window"),
    pytest.param({"stale_after_s": 0}, "stale_after_s", "> 0", id="zero-stale-window"),
    pytest.param({"scale_down_max_fraction": 10}, "scale_down_max_fraction", "<= 1",
                 id="step-percent"),
    pytest.param({"surge_confirm_ticks": 0}, "surge_confirm_ticks", ">= 1",
                 id="zero-confirm-ticks"),
    pytest.param({"capacity_rps_per_replica": float("nan")}, "capacity_rps_per_replica",
                 "finite", id="nan-capacity"),
    pytest.param({"capacity_rps_per_replica": float("inf")}, "capacity_rps_per_replica",
                 "finite", id="inf-capacity"),
    pytest.param({"slo_part_quantiles_s": 0.2}, "slo_part_quantiles_s", "array",
                 id="list-as-scalar"),
    pytest.param({"slo_part_quantiles_s": [0.1, -0.2]}, "slo_part_quantiles_s", ">= 0",
                 id="negative-list-item"),
    pytest.param({"slo_part_quantiles_s": [0.1] * 33}, "slo_part_quantiles_s", "at most",
                 id="list-too-long"),
    pytest.param({"max_wait_miss": 1}, "max_wait_miss", "< 1", id="miss-share-one"),
    pytest.param({"capacity_rps_per_replica": {"value": 3}}, "capacity_rps_per_replica",
                 "object", id="nested-object"),
]


@pytest.mark.parametrize(("body", "field", "reason_part"), INVALID)
def test_invalid_documents_name_the_field(body, field, reason_part):
    with pytest.raises(PolicyInvalid) as err:
        validate_document(body)
    assert err.value.field == field
    assert reason_part in err.value.reason
    assert str(err.value) == f"{field}: {err.value.reason}"


@pytest.mark.parametrize("body", [pytest.param([], id="array"), pytest.param("x", id="string"),
                                  pytest.param(None, id="null")])
def test_a_document_must_be_an_object(body):
    with pytest.raises(PolicyInvalid, match="object"):
        validate_document(body)


def test_the_first_bad_field_is_named_in_field_order():
    with pytest.raises(PolicyInvalid) as err:
        validate_document({"max_replicas": 0, "quantile": 95})
    assert err.value.field == "quantile"  # quantile comes before max_replicas


def test_direct_mode_is_refused_for_a_target_with_an_hpa():
    with pytest.raises(PolicyInvalid) as err:
        apply_document(target(hpa="llm-hpa"), {"mode": "direct"})
    assert err.value.field == "mode"
    assert apply_document(target(), {"mode": "direct"}).mode == "direct"


# -- merge patch (RFC 7386) ---------------------------------------------------------------

def base_doc():
    return validate_document({"quantile": 0.9, "lead_time_s": 600.0, "min_replicas": 2,
                              "slo_part_quantiles_s": [0.2, 0.5]})


MERGES = [
    pytest.param({}, {}, id="empty-patch-keeps-all"),
    pytest.param({"quantile": 0.99}, {"quantile": 0.99}, id="replace-one"),
    pytest.param({"lead_time_s": None}, {"lead_time_s": None}, id="null-resets-nullable"),
    pytest.param({"quantile": None}, {"quantile": 0.97}, id="null-resets-to-default"),
    pytest.param({"min_replicas": None, "max_replicas": 10}, {"min_replicas": 1,
                                                               "max_replicas": 10},
                 id="null-and-set"),
    pytest.param({"slo_part_quantiles_s": [1.0]}, {"slo_part_quantiles_s": [1.0]},
                 id="arrays-replace-not-merge"),
    pytest.param({"slo_part_quantiles_s": None}, {"slo_part_quantiles_s": []},
                 id="null-resets-array"),
    pytest.param({"dry_run": True, "mode": "metric"}, {"dry_run": True, "mode": "metric"},
                 id="mode-and-dry-run"),
]


@pytest.mark.parametrize(("patch", "changed"), MERGES)
def test_merge_patch(patch, changed):
    before = base_doc()
    after = merge_patch(before, patch)
    assert after == {**before, **changed}
    assert before == base_doc()  # inputs are not mutated


@pytest.mark.parametrize(("patch", "field"), [
    pytest.param({"quantile": 95}, "quantile", id="invalid-value"),
    pytest.param({"max_replicas": 1}, "min_replicas", id="min-now-above-max"),
    pytest.param({"nope": None}, None, id="null-of-unknown-is-a-no-op"),
    pytest.param({"nope": 1}, "nope", id="unknown-field"),
    pytest.param({"quantile": {"a": 1}}, "quantile", id="nested-object-into-scalar"),
])
def test_merge_patch_validates_the_result(patch, field):
    if field is None:
        assert merge_patch(base_doc(), patch) == base_doc()
        return
    with pytest.raises(PolicyInvalid) as err:
        merge_patch(base_doc(), patch)
    assert err.value.field == field


def test_merge_patch_must_be_an_object():
    with pytest.raises(PolicyInvalid):
        merge_patch(base_doc(), [{"quantile": 0.9}])


# -- round trip ---------------------------------------------------------------------------

def _floats(lo, hi, **kw):
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False, **kw)


@st.composite
def valid_docs(draw):
    lo = draw(st.integers(0, 50))
    hi = draw(st.integers(max(lo, 1), 500))
    doc = {
        # >= 256 slots / 3600 s: policy_doc.MAX_SERVICE_S bounds slots / capacity
        "capacity_rps_per_replica": draw(_floats(0.1, 1e5)),
        "target_utilization": draw(st.none() | _floats(0.01, 1.0)),
        "slots_per_replica": draw(st.integers(1, 256)),
        "wait_budget_s": draw(_floats(0.001, 60)),
        "max_wait_miss": draw(_floats(1e-6, 0.5)),
        "slo_s": draw(st.none() | _floats(0, 60)),
        "slo_part_quantiles_s": draw(st.lists(_floats(0, 30), max_size=4)),
        "service_scv": draw(_floats(0, 10)),
        "quantile": draw(_floats(0.5, 0.999)),
        "min_replicas": lo,
        "max_replicas": hi,
        "lead_time_s": draw(st.none() | _floats(0, 3600)),
        "scale_down_window_s": draw(st.none() | _floats(0, 86400)),
        "scale_down_window_leads": draw(_floats(0, 10)),
        "scale_down_max_fraction": draw(_floats(0.01, 1.0)),
        "surge_margin": draw(_floats(0, 5)),
        "surge_confirm_ticks": draw(st.integers(1, 20)),
        "surge_hold_s": draw(_floats(1, 7200)),
        "stale_after_s": draw(_floats(1, 3600)),
        "handback_after_s": draw(_floats(0, 7200)),
        "trend_floor": draw(st.booleans()),
        "forecaster": draw(st.sampled_from(model_names())),
        "mode": draw(st.sampled_from(["floor", "metric", "direct"])),
        "dry_run": draw(st.booleans()),
    }
    # Any subset of fields may be left out (PUT fills defaults).
    keep = draw(st.sets(st.sampled_from(sorted(doc))))
    return {k: v for k, v in doc.items() if k in keep}


@settings(max_examples=150, deadline=None)
@given(valid_docs())
def test_round_trip_document_of_apply_document(raw):
    doc = validate_document(raw)
    assert {k: doc[k] for k in raw} == raw  # valid values are kept as given
    config = apply_document(target(), doc)
    assert document_of(config) == doc
    assert config.policy.tick_s == 30.0
    # merge-patching a document with itself, or with nothing, changes nothing
    assert merge_patch(doc, doc) == doc == merge_patch(doc, {})


@settings(max_examples=50, deadline=None)
@given(valid_docs())
def test_global_dry_run_wins(raw):
    config = apply_document(target(), raw, global_dry_run=True)
    assert config.dry_run is True
    assert document_of(config)["dry_run"] is True


def test_the_running_defaults_are_a_valid_document():
    config = target()
    assert validate_document(document_of(config)) == document_of(config)


# -- the OpenAPI models agree with the validator ------------------------------------------

def test_pydantic_document_defaults_match_the_put_defaults():
    assert PolicyDocument().model_dump() == validate_document({})
    with pytest.raises(ValidationError):
        PolicyDocument(quantil=0.9)
    with pytest.raises(ValidationError):
        PolicyDocument(quantile=95)
    with pytest.raises(ValidationError):
        PolicyDocument(forecaster="prophet")


def test_pydantic_patch_model_is_all_optional_and_nullable():
    assert PolicyPatch().model_dump(exclude_unset=True) == {}
    assert PolicyPatch(quantile=None).model_dump(exclude_unset=True) == {"quantile": None}
    schema = PolicyPatch.model_json_schema()
    assert not schema.get("required")
    assert schema["additionalProperties"] is False
