"""Threat-intel bundles: every kind of bad bundle is refused with its reason and the last good set stays;
the bundle id is the digest of the content, never a random or sender-chosen id."""

from __future__ import annotations

import json

import pytest

from trustfabric.audit.events import Kind
from trustfabric.errors import SignalError
from trustfabric.signals.threat_intel import ADDRESS, SPIFFE_ID, indicator_bundle, parse_bundle

MEANREV = "algo-meanrev"
NOW = 1_750_000_000.0  # 2025, after the indicators' valid_from
INDICATOR = {"type": "indicator", "spec_version": "2.1", "id": "indicator--0c2e2a54-6a6e-4d5a-9c43-6f3f8e0a1b22",
             "created": "2024-01-01T00:00:00.000Z", "modified": "2024-01-01T00:00:00.000Z",
             "pattern": "[ipv4-addr:value = '192.0.2.7']", "pattern_type": "stix",
             "valid_from": "2024-01-01T00:00:00Z"}
IDENTITY = {"type": "identity", "spec_version": "2.1", "id": "identity--311b2d2d-f010-4473-83ec-1edf84858f4c",
            "created": "2024-01-01T00:00:00.000Z", "modified": "2024-01-01T00:00:00.000Z", "name": "ISAC"}


def _bundle(*objects, **extra) -> str:
    return json.dumps({"type": "bundle", "id": "bundle--6f0b5d6e-4a8f-4c49-9b1b-2f6a3a6c0d11",
                       "objects": list(objects), **extra})


REFUSALS = [
    ('{"type": "bundle"}', "signal.intel.empty"),
    ('{"type": "bundle", "id": "bundle--6f0b5d6e-4a8f-4c49-9b1b-2f6a3a6c0d11", "objects": []}', "signal.intel.empty"),
    ("not json at all", "signal.intel.malformed"),
    (b"\xff\xfe", "signal.intel.malformed"),
    ("[1, 2]", "signal.intel.not_a_bundle"),
    ('{"type": "indicator"}', "signal.intel.not_a_bundle"),
    (_bundle({"foo": 1}), "signal.intel.not_stix"),
    (_bundle({"type": "x-custom", "id": "x-custom--6f0b5d6e-4a8f-4c49-9b1b-2f6a3a6c0d11", "spec_version": "2.1"}),
     "signal.intel.not_stix"),
    (json.dumps({"type": "bundle", "objects": "everything"}), "signal.intel.not_stix"),
    (_bundle(IDENTITY), "signal.intel.no_indicators"),
    (_bundle(dict(INDICATOR, pattern="[ipv4-addr:value = ")), "signal.intel.pattern"),
    (_bundle(dict(INDICATOR, pattern="[domain-name:value = 'evil.example']")), "signal.intel.no_usable_indicator"),
]


@pytest.mark.parametrize("bundle,reason", REFUSALS)
def test_bad_bundle_refused_with_its_reason(bundle, reason):
    with pytest.raises(SignalError) as info:
        parse_bundle(bundle, NOW)
    assert info.value.reason == reason


@pytest.mark.parametrize("bundle,reason", REFUSALS)
def test_hub_keeps_the_last_good_bundle(engine, hub, sink, bundle, reason):
    good = hub.load_threat_intel(indicator_bundle([(SPIFFE_ID, engine.topology.spiffe_id(MEANREV))]))
    with pytest.raises(SignalError) as info:
        hub.load_threat_intel(bundle)
    assert info.value.reason == reason
    assert hub.intel is good and hub.show()["threat_intel"]["bundle"] == good.bundle_id
    assert not engine.decide(MEANREV, "subscribe", "md/JPM").allowed  # the good bundle's indicator still holds
    refused = sink.of_kind(Kind.SIGNAL_REFUSED)[-1]
    assert refused.reason == reason and refused.detail["signal"] == "threat_intel"


def test_bundle_id_is_the_content_digest():
    first = parse_bundle(_bundle(INDICATOR), NOW)
    renamed = parse_bundle(_bundle(INDICATOR) .replace("6f0b5d6e", "00000000"), NOW)
    reordered = parse_bundle(_bundle(IDENTITY, INDICATOR), NOW)
    anonymous = parse_bundle(json.dumps({"type": "bundle", "objects": [INDICATOR]}), NOW)
    assert first.bundle_id.startswith("sha256:") and len(first.bundle_id) == 7 + 64
    assert first.bundle_id == renamed.bundle_id == anonymous.bundle_id  # the sender's id names nothing
    assert parse_bundle(json.dumps({"type": "bundle", "objects": [INDICATOR]}), NOW).bundle_id == anonymous.bundle_id
    assert reordered.bundle_id == parse_bundle(_bundle(INDICATOR, IDENTITY), NOW).bundle_id  # order is not content
    other = parse_bundle(_bundle(dict(INDICATOR, pattern="[ipv4-addr:value = '192.0.2.8']")), NOW)
    assert other.bundle_id != first.bundle_id
    assert first.match(ADDRESS, "192.0.2.7")


def test_withdrawn_indicators_are_a_good_bundle():
    """A feed withdraws indicators by revoking them: that bundle replaces the old set (with nothing in force)."""
    intel = parse_bundle(_bundle(dict(INDICATOR, revoked=True)), NOW)
    assert intel.count == 0 and intel.match(ADDRESS, "192.0.2.7") is None


def test_cli_refuses_an_empty_bundle_and_keeps_the_last_good(tmp_path, monkeypatch, topology):
    from typer.testing import CliRunner

    from trustfabric.cli import app

    monkeypatch.setenv("TRUSTFABRIC_HOME", str(tmp_path / "home"))
    good = tmp_path / "good.json"
    good.write_text(indicator_bundle([(SPIFFE_ID, topology.spiffe_id(MEANREV))]))
    empty = tmp_path / "empty.json"
    empty.write_text('{"type": "bundle"}')
    runner = CliRunner()
    loaded = runner.invoke(app, ["signal", "intel", str(good)])
    assert loaded.exit_code == 0, loaded.output
    before = json.loads(runner.invoke(app, ["signal", "show"]).output)["threat_intel"]
    refused = runner.invoke(app, ["signal", "intel", str(empty)])
    assert refused.exit_code != 0 and "signal.intel.empty" in refused.output
    after = json.loads(runner.invoke(app, ["signal", "show"]).output)["threat_intel"]
    assert after == before and after["indicators"] == 1 and after["bundle"].startswith("sha256:")
