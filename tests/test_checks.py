"""The static check: each rule, with its name and line."""

import textwrap

from agentarch.evaluation.checks import MAX_CODE_BYTES, check
from tests.conftest import REPO

GOOD = textwrap.dedent("""
    import math
    import torch
    from torch import nn
    import torch.nn.functional as F

    HPARAMS = {"lr": 0.002, "epochs": 10}

    class Net(nn.Module):
        def __init__(self, in_shape, num_classes):
            super().__init__()
            self.fc = nn.Linear(math.prod(in_shape), num_classes)

        def forward(self, x):
            return self.fc(F.relu(x.flatten(1)))
""")


def rules(code):
    return [(r.rule, r.line) for r in check(code).rejections]


def test_good_candidate_passes_and_reports_hparams():
    result = check(GOOD)
    assert result.ok, result.reason
    assert result.hparams == {"lr": 0.002, "epochs": 10}


def test_syntax_error_names_the_line():
    assert rules("import torch\nclass Net(:\n") == [("syntax", 2)]


def test_import_allowlist():
    found = rules(GOOD.replace("import math", "import os\nfrom subprocess import run"))
    assert ("import-allowlist", 2) in found and ("import-allowlist", 3) in found
    assert "os" in check(GOOD.replace("import math", "import os")).reason


def test_relative_import_rejected():
    assert rules(GOOD.replace("import math", "from . import helpers"))[0][0] == "import-allowlist"


def test_forbidden_calls():
    code = GOOD.replace("return self.fc", "open('/etc/passwd')\n        return self.fc")
    assert ("forbidden-call", 15) in rules(code)
    assert rules(GOOD + "\neval('1')\n")[0][0] == "forbidden-call"


def test_missing_net():
    assert rules(GOOD.replace("class Net", "class Model")) == [("contract-net", None)]


def test_net_without_base():
    assert rules(GOOD.replace("class Net(nn.Module)", "class Net"))[0][0] == "contract-net"


def test_init_signature():
    found = rules(GOOD.replace("def __init__(self, in_shape, num_classes)", "def __init__(self, channels)"))
    assert found == [("contract-init", 10)]
    assert check(GOOD.replace("num_classes):", "num_classes, width=64):")).ok


def test_forward_signature():
    assert rules(GOOD.replace("def forward(self, x)", "def forward(self, x, y)")) == [("contract-forward", 14)]
    assert rules(GOOD.replace("def forward(self, x)", "def run(self, x)"))[0][0] == "contract-forward"


def test_forward_inherited_from_local_base():
    code = textwrap.dedent("""
        from torch import nn
        class Base(nn.Module):
            def forward(self, x):
                return self.fc(x.flatten(1))
        class Net(Base):
            def __init__(self, in_shape, num_classes):
                super().__init__()
                self.fc = nn.Linear(64, num_classes)
    """)
    assert check(code).ok


def test_hparams_bounds_and_keys():
    assert rules(GOOD.replace('"lr": 0.002', '"lr": 5.0')) == [("hparams", 7)]
    assert "outside" in check(GOOD.replace('"lr": 0.002', '"lr": 5.0')).reason
    assert rules(GOOD.replace('"lr": 0.002', '"optimizer": 1'))[0][0] == "hparams"
    assert rules(GOOD.replace('"epochs": 10', '"epochs": 2.5'))[0][0] == "hparams"
    assert rules(GOOD.replace('{"lr": 0.002, "epochs": 10}', "dict(lr=0.1)"))[0][0] == "hparams"


def test_size_limit():
    big = GOOD + "#" * (MAX_CODE_BYTES + 1)
    assert rules(big) == [("size", None)]


def test_reason_names_rule_and_line():
    reason = check(GOOD.replace("import math", "import os")).reason
    assert reason.startswith("[import-allowlist] line 2:")


def test_checks_and_hashes_run_from_many_threads_at_once():
    """The agent loop checks candidates in parallel branches; CPython 3.11's AST conversion is not thread-safe."""
    import threading

    from agentarch.evaluation.dedup import ast_hash

    code = (REPO / "archive" / "seeds" / "image" / "resnet.py").read_text()
    errors = []

    def work():
        try:
            for _ in range(100):
                assert check(code).ok
                ast_hash(code)
        except BaseException as err:  # noqa: BLE001 - any error fails the test
            errors.append(err)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_a_collection_whose_finalizers_parse_cannot_break_a_check_under_way():
    """CI saw "[host] static_check raised SystemError: AST constructor recursion depth mismatch": a garbage
    collection set off by the conversion's own allocations ran a finalizer that parsed (3.11's traceback
    formatting does) and reset the depth the interpreter shares. Bare `ast.parse` fails here; `check` must not."""
    import ast
    import gc

    class ParsesWhenCollected:
        def __init__(self):
            self.cycle = self

        def __del__(self):
            def deeper(levels):
                return deeper(levels - 1) if levels else ast.parse("x = 1")

            deeper(30)

    code = (REPO / "archive" / "seeds" / "image" / "resnet.py").read_text()
    code += "\n".join(f"T{i} = [{i}, ({i}, {{'a': {i}}})]" for i in range(1200)) + "\n"

    def litter():
        for _ in range(2000):
            ParsesWhenCollected()

    assert gc.isenabled()
    litter()
    try:
        ast.parse(code)
    except SystemError as error:
        bare = str(error)
    else:
        bare = ""
    assert "recursion depth mismatch" in bare, "the hazard did not reproduce; the test below would prove nothing"
    for _ in range(3):
        litter()
        assert check(code).ok
    assert gc.isenabled()
    gc.collect()


def test_code_nested_deeper_than_any_network_needs_is_refused_not_a_crash():
    """900 unary minus signs parse, but the recursive AST passes after the check would raise RecursionError."""
    deep = check(GOOD + "Z = " + "-" * 900 + "1\n")
    assert not deep.ok and deep.rejections[0].rule == "depth" and "903 levels" in deep.reason
    parens = check(GOOD + "Z = " + "(" * 900 + "1" + ")" * 900 + "\n")
    assert not parens.ok and parens.rejections[0].rule == "syntax"
