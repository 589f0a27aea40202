"""Settings precedence: defaults < TOML file < environment < flags; bad input says what to fix."""

from pathlib import Path

import pytest

from agentarch.config import ConfigError, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    for var in ("AGENTARCH_CONFIG", "AGENTARCH_TASK", "AGENTARCH_SEED", "AGENTARCH_ARCHIVE"):
        monkeypatch.delenv(var, raising=False)


def test_defaults():
    s = load_settings()
    assert s.task == "digits" and s.archive == Path("archive/archive.db") and s.isolation == "auto"


def test_precedence(tmp_path, monkeypatch):
    (tmp_path / "agentarch.toml").write_text('task = "mqar"\nseed = 3\narchive = "from-file.db"\n')
    assert load_settings().task == "mqar"
    monkeypatch.setenv("AGENTARCH_SEED", "5")
    s = load_settings()
    assert (s.task, s.seed, s.archive) == ("mqar", 5, Path("from-file.db"))
    s = load_settings(seed=7, task=None)
    assert (s.task, s.seed) == ("mqar", 7)


def test_config_path_from_environment(tmp_path, monkeypatch):
    other = tmp_path / "elsewhere.toml"
    other.write_text("epochs = 4\n")
    monkeypatch.setenv("AGENTARCH_CONFIG", str(other))
    assert load_settings().epochs == 4


def test_unknown_key_and_bad_value_name_the_field(tmp_path):
    (tmp_path / "agentarch.toml").write_text("epochz = 4\n")
    with pytest.raises(ConfigError, match="epochz"):
        load_settings()
    (tmp_path / "agentarch.toml").write_text('isolation = "docker"\n')
    with pytest.raises(ConfigError, match="isolation"):
        load_settings()


def test_malformed_toml(tmp_path):
    (tmp_path / "agentarch.toml").write_text("task = \n")
    with pytest.raises(ConfigError, match="agentarch.toml"):
        load_settings()
