"""The model holder: loads by alias, swaps whole sets, keeps the last good one when the registry fails."""

from __future__ import annotations

from prometheus_client import REGISTRY

from predictor.holder import ModelHolder
from tests.support.predictor_fakes import FakeSource


def stale_gauge() -> float | None:
    return REGISTRY.get_sample_value("fds_model_stale")


def test_loads_the_champion_and_the_challenger() -> None:
    source = FakeSource(aliases_={"champion": "1", "challenger": "2"})
    holder = ModelHolder(source)
    result = holder.refresh("startup")
    assert result.changed and result.error is None
    serving = holder.serving
    assert serving is not None and serving.versions == {"champion": "1", "challenger": "2"}
    assert (serving.champion.alias, serving.challenger.alias if serving.challenger else None) == (
        "champion",
        "challenger",
    )
    assert serving.champion.model.run_id == "run-1"
    assert REGISTRY.get_sample_value("fds_model_info", {"alias": "challenger", "version": "2"}) == 1.0


def test_nothing_changes_when_the_aliases_did_not_move() -> None:
    source = FakeSource(aliases_={"champion": "1"})
    holder = ModelHolder(source)
    holder.refresh()
    before = holder.serving
    result = holder.refresh("periodic")
    assert not result.changed and holder.serving is before
    assert source.loads == ["1"]
    assert holder.status.checks == 2 and holder.status.swaps == 1


def test_an_alias_move_swaps_in_a_new_set_and_reuses_loaded_versions() -> None:
    source = FakeSource(aliases_={"champion": "1", "challenger": "2"})
    holder = ModelHolder(source)
    holder.refresh()
    old = holder.serving
    # Promotion: the challenger becomes champion, the challenger alias disappears.
    source.aliases_ = {"champion": "2", "previous_champion": "1"}
    result = holder.refresh("model.deployed")
    assert result.changed
    assert holder.serving is not old and holder.serving is not None
    assert holder.serving.versions == {"champion": "2"}
    assert old is not None and old.versions == {"champion": "1", "challenger": "2"}, "old set untouched"
    assert source.loads == ["1", "2"], "v2 was already in memory"
    assert REGISTRY.get_sample_value("fds_model_info", {"alias": "challenger", "version": "2"}) is None
    assert REGISTRY.get_sample_value("fds_model_info", {"alias": "champion", "version": "2"}) == 1.0


def test_both_aliases_on_one_version_serve_it_as_champion_only() -> None:
    holder = ModelHolder(FakeSource(aliases_={"champion": "1", "challenger": "1"}))
    holder.refresh()
    assert holder.serving is not None and holder.serving.challenger is None


def test_registry_down_keeps_the_last_good_set_and_reports_stale() -> None:
    source = FakeSource(aliases_={"champion": "1"})
    holder = ModelHolder(source)
    holder.refresh()
    serving = holder.serving
    source.down = True
    source.aliases_ = {"champion": "2"}
    result = holder.refresh("periodic")
    assert result.error is not None and "connection refused" in result.error
    assert holder.serving is serving
    assert holder.status.stale and holder.status.stale_since is not None
    assert stale_gauge() == 1.0
    since = holder.status.stale_since
    holder.refresh("periodic")
    assert holder.status.stale_since == since, "stale since the first failure"

    source.down = False
    result = holder.refresh("periodic")
    assert result.changed and result.error is None
    assert holder.serving is not None and holder.serving.versions == {"champion": "2"}
    assert not holder.status.stale and holder.status.last_error is None
    assert stale_gauge() == 0.0


def test_without_a_champion_alias_nothing_serves() -> None:
    holder = ModelHolder(FakeSource(aliases_={"challenger": "2"}))
    result = holder.refresh()
    assert holder.serving is None
    assert result.error is not None and "no @champion alias" in result.error


def test_a_champion_alias_that_disappears_keeps_the_last_good_model() -> None:
    source = FakeSource(aliases_={"champion": "1"})
    holder = ModelHolder(source)
    holder.refresh()
    source.aliases_ = {}
    holder.refresh()
    assert holder.serving is not None and holder.serving.versions == {"champion": "1"}
    assert holder.status.stale


def test_a_broken_challenger_never_replaces_a_working_set() -> None:
    source = FakeSource(aliases_={"champion": "1"})
    holder = ModelHolder(source)
    holder.refresh()
    serving = holder.serving
    source.aliases_ = {"champion": "2", "challenger": "3"}
    source.broken_versions = {"3"}
    result = holder.refresh()
    assert result.error is not None and holder.serving is serving and holder.status.stale


def test_a_broken_challenger_does_not_stop_the_first_champion_from_serving() -> None:
    source = FakeSource(aliases_={"champion": "1", "challenger": "3"}, broken_versions={"3"})
    holder = ModelHolder(source)
    result = holder.refresh()
    assert holder.serving is not None and holder.serving.versions == {"champion": "1"}
    assert result.error is not None and "challenger v3" in result.error
    assert holder.status.stale
    # Once the challenger can be loaded, it joins.
    source.broken_versions = set()
    holder.refresh()
    assert holder.serving.versions == {"champion": "1", "challenger": "3"}
    assert not holder.status.stale
