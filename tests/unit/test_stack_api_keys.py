"""The local stack's API keys: generated once (0600), digests for the services, Alertmanager's key."""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
import yaml

from constellation import api_keys, stack
from mlops_platform.auth import KeyStore, Role


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_keys_are_generated_once_private_and_the_services_get_only_digests(tmp_path: Path) -> None:
    first = api_keys.ensure(tmp_path)
    again = api_keys.ensure(tmp_path)
    assert first.keys == again.keys and set(first.keys) == set(Role)
    for path in (api_keys.keys_path(tmp_path), api_keys.digests_path(tmp_path)):
        assert mode(path) == 0o600
    digests = api_keys.digests_path(tmp_path).read_text()
    assert all(key not in digests for key in first.keys.values())
    store = KeyStore.load(None, Path(first.service_env()["API_KEYS_FILE"]))
    for role in Role:
        principal = store.authenticate(first.key(role))
        assert principal is not None and principal.role is role and principal.name == f"local-{role.value}"


def test_usage_shows_every_key_with_curl_examples(tmp_path: Path) -> None:
    keys = api_keys.ensure(tmp_path)
    text = api_keys.usage(keys, "http://i", "http://r")
    assert all(keys.key(role) in text for role in Role)
    assert "curl" in text and "Idempotency-Key" in text


def test_alertmanager_sends_a_producer_key_to_the_alerter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stack, "STATE", tmp_path)
    monkeypatch.setattr(stack, "ALERTMANAGER_HOME", tmp_path / "alertmanager")
    rendered = stack.render_alertmanager_config()
    config = yaml.safe_load(rendered.read_text())
    [webhook] = config["receivers"][0]["webhook_configs"]
    authorization = webhook["http_config"]["authorization"]
    key_file = Path(authorization["credentials_file"])
    assert authorization["type"] == "Bearer" and mode(key_file) == 0o600
    assert key_file.read_text() == api_keys.ensure(tmp_path).key(Role.PRODUCER)
    assert "credentials" not in authorization  # the key is not in the config itself
    amtool = shutil.which("amtool")
    if amtool is not None:  # Debian's prometheus-alertmanager ships it
        subprocess.run([amtool, "check-config", str(rendered)], check=True, capture_output=True)


def test_compose_alertmanager_authenticates_too() -> None:
    config = yaml.safe_load((stack.ROOT / "deploy" / "alertmanager" / "alertmanager.yml").read_text())
    [webhook] = config["receivers"][0]["webhook_configs"]
    assert webhook["http_config"]["authorization"]["type"] == "Bearer"
    assert webhook["http_config"]["authorization"]["credentials_file"]


def test_keys_file_roundtrip_is_json(tmp_path: Path) -> None:
    api_keys.ensure(tmp_path)
    raw = json.loads(api_keys.keys_path(tmp_path).read_text())
    assert {entry["role"] for entry in raw["keys"]} == {role.value for role in Role}
