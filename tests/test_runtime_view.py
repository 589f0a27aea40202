"""The runtime view: what candidates may read is built from what the runner needs, in both renderings."""

from pathlib import Path

import sklearn

from agentarch.isolation.runtime_view import package_closure, runtime_view


def test_the_view_holds_torch_and_numpy_and_no_other_package():
    view = runtime_view()
    names = {p.name for p in view.packages}
    assert {"torch", "numpy"} <= names
    assert not any(n.startswith(("sklearn", "scikit", "scipy", "agentarch", "litellm", "openai")) for n in names)
    assert {d.metadata["Name"].lower() for d in package_closure()} >= {"torch", "numpy"}


def test_no_readable_path_reaches_a_package_directory_or_the_label_source():
    """Landlock's flat list: no path at or above a hole, so scikit-learn's digits data is not beneath any."""
    view = runtime_view()
    digits = Path(sklearn.__file__).resolve().parent / "datasets" / "data" / "digits.csv.gz"
    for path in view.paths:
        assert not any(hole.is_relative_to(path) for hole in view.holes), path
        assert not digits.is_relative_to(path), path
    assert set(view.packages) <= set(view.paths)


def test_bubblewrap_covers_every_hole_under_a_root():
    """bubblewrap's form: each hole under a bound root is covered (an empty tmpfs) before packages go in."""
    view = runtime_view()
    for hole in view.holes:
        assert any(hole.is_relative_to(root) and hole != root for root in view.roots)
    assert not set(view.holes) & set(view.roots)
