"""What the host holds that a hostile candidate must not reach, shared by the security tests."""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.security.harness import SECRET_ENV, SECRET_FILE, SECRET_KEY, Listeners


@pytest.fixture(scope="module")
def listeners(tmp_path_factory):
    running = Listeners(tmp_path_factory.mktemp("sockets"))
    yield running
    running.close()


@pytest.fixture
def host(tmp_path, digits, listeners, monkeypatch):
    """What the host holds that the sandbox must not reach, and the paths it checks afterwards."""
    token = secrets.token_hex(6)
    monkeypatch.setenv("AGENTARCH_TEST_SECRET", SECRET_ENV)
    monkeypatch.setenv("OPENAI_API_KEY", SECRET_KEY)
    home = tmp_path / "home"
    home.mkdir()
    (home / ".agentarch-secret").write_text(SECRET_FILE)
    monkeypatch.setenv("HOME", str(home))
    labels = np.load(digits.labels_dir / "test_y.npy")
    stolen = tmp_path / "stolen.npy"  # "another candidate's" perfect outputs, on the host
    np.save(stolen, np.eye(10, dtype=np.float32)[labels] * 100)
    visible_sock = digits.inputs_dir / f"listener-{token}.sock"
    listeners.add_unix("unix_visible", visible_sock)
    site_packages = next(p for p in sys.path if p.endswith("site-packages"))
    # the Python installation rather than the repository: a clone under /tmp would sit inside the
    # sandbox's private /tmp tmpfs, where a write lands harmlessly but does not fail
    targets = [
        f"/tmp/escape-marker-{token}",
        str(Path(sys.prefix) / f"escape-{token}"),
        str(Path.home() / f"escape-{token}"),
        f"/root/escape-{token}",
        str(digits.inputs_dir / f"escape-{token}"),
        f"{site_packages}/escape-{token}.pth",
        str(digits.labels_dir / f"escape-{token}"),
    ]
    import sklearn.datasets

    values = {
        "token": token,
        "tcp4": listeners.addresses["tcp4"],
        "tcp6": listeners.addresses["tcp6"],
        "udp4": listeners.addresses["udp4"],
        "unix_hidden": listeners.addresses["unix_hidden"],
        "unix_abstract": listeners.addresses["unix_abstract"],
        "home_secret": str(home / ".agentarch-secret"),
        "real_home": "/root",
        "archive": str(tmp_path / "a.db"),
        "labels_dir": str(digits.labels_dir),
        "host_pid": os.getpid(),
        "stolen": str(stolen),
        "targets": targets[1:],
        "tmp_marker": targets[0],
        "cache_dir": str(digits.labels_dir.parent.parent),
        "sklearn_digits": str(Path(sklearn.datasets.__file__).parent / "data" / "digits.csv.gz"),
    }
    yield {
        "values": values,
        "targets": targets,
        "labels": labels,
        "visible_sock": visible_sock,
        "val_labels": np.load(digits.labels_dir / "val_y.npy"),
    }
    visible_sock.unlink(missing_ok=True)
    for target in targets:
        Path(target).unlink(missing_ok=True)
