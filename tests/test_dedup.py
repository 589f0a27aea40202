"""Static dedup levels: each positive and negative, including the indentation case."""

import textwrap

import pytest

from agentarch.evaluation.dedup import ast_hash, canonical_ast, whitespace_hash

BASE = textwrap.dedent('''
    import torch
    from torch import nn


    class Net(nn.Module):
        """A small MLP."""

        def __init__(self, in_shape, num_classes):
            super().__init__()
            width = 64
            self.body = nn.Sequential(nn.Flatten(), nn.Linear(in_shape[0] * in_shape[1] * in_shape[2], width), nn.ReLU())
            self.head = nn.Linear(width, num_classes)

        def forward(self, x):
            h = self.body(x)
            if h.shape[0] > 1:
                h = h * 2
                h = h + 1
            return self.head(h)
''')


def test_whitespace_level_ignores_spacing_and_blank_lines():
    spaced = BASE.replace("h = h * 2", "h  =  h*2 ".replace("h*2", "h * 2")).replace("\n\n", "\n\n\n\n")
    trailing = "\n".join(line + "   " for line in BASE.splitlines())
    assert whitespace_hash(spaced) == whitespace_hash(BASE)
    assert whitespace_hash(trailing) == whitespace_hash(BASE)


def test_whitespace_level_tells_different_code_apart():
    assert whitespace_hash(BASE.replace("width = 64", "width = 65")) != whitespace_hash(BASE)


def test_indentation_is_structure_at_both_levels():
    # `h = h + 1` moves out of the if-block: same text modulo whitespace, different program.
    moved = BASE.replace("            h = h + 1\n", "        h = h + 1\n")
    assert moved != BASE
    assert whitespace_hash(moved) != whitespace_hash(BASE)
    assert ast_hash(moved) != ast_hash(BASE)


def test_ast_level_ignores_comments_docstrings_names_annotations_and_layout():
    variant = textwrap.dedent('''
        import torch
        import torch.nn as nn  # aliased differently

        class Net(nn.Module):
            def __init__(self, shape: tuple, n_cls: int) -> None:
                super().__init__()
                hidden = 64  # renamed local
                self.trunk = nn.Sequential(
                    nn.Flatten(),
                    nn.Linear(shape[0] * shape[1] * shape[2], hidden),
                    nn.ReLU(),
                )
                self.classifier = torch.nn.Linear(hidden, n_cls)

            def forward(self, inp: torch.Tensor) -> torch.Tensor:
                """Docstrings do not matter."""
                z = self.trunk(inp)
                if z.shape[0] > 1:
                    z = z * 2
                    z = z + 1
                return self.classifier(z)
    ''')
    assert whitespace_hash(variant) != whitespace_hash(BASE)
    assert ast_hash(variant) == ast_hash(BASE)


HELPER = textwrap.dedent("""
    import torch
    from torch import nn


    def block(c_in, c_out, kernel=3):
        return nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2)


    class Net(nn.Module):
        def __init__(self, in_shape, num_classes, width=16):
            super().__init__()
            self.conv = block(c_in=in_shape[0], c_out=width, kernel=3)
            self.head = nn.Linear(width, num_classes)

        def forward(self, x):
            return self.head(self.conv(x).mean(dim=(2, 3)))
""")


def test_ast_level_renames_the_keywords_of_the_programs_own_calls():
    renamed = (
        HELPER.replace("c_in", "cin").replace("c_out", "cout").replace("kernel", "k").replace("width", "w")
    ).replace("block", "make_conv")
    assert ast_hash(renamed) == ast_hash(HELPER)


def test_ast_level_keeps_library_keywords_whatever_the_program_names_its_own():
    padded = "from torch import nn\n\ndef f(padding):\n    return nn.Conv2d(1, 1, 3, padding=padding)\n"
    strided = "from torch import nn\n\ndef f(stride):\n    return nn.Conv2d(1, 1, 3, stride=stride)\n"
    assert ast_hash(padded) != ast_hash(strided)
    assert ast_hash(HELPER.replace("dim=(2, 3)", "dim=(3, 2)")) != ast_hash(HELPER)


def test_ast_level_sees_structure_changes():
    assert ast_hash(BASE.replace("nn.ReLU()", "nn.GELU()")) != ast_hash(BASE)
    assert ast_hash(BASE.replace("h * 2", "h * 3")) != ast_hash(BASE)
    swapped = BASE.replace("h = h * 2\n            h = h + 1", "h = h + 1\n            h = h * 2")
    assert ast_hash(swapped) != ast_hash(BASE)


def test_ast_level_keeps_contract_names():
    renamed_forward = BASE.replace("def forward(self, x)", "def call(self, x)")
    assert ast_hash(renamed_forward) != ast_hash(BASE)
    assert "forward" in canonical_ast(BASE) and "Net" in canonical_ast(BASE)


def test_import_styles_resolve_to_one_name():
    a = "from torch import nn\nx = nn.Conv2d(1, 2, 3)\n"
    b = "import torch\nx = torch.nn.Conv2d(1, 2, 3)\n"
    c = "from torch.nn import Conv2d\nx = Conv2d(1, 2, 3)\n"
    assert ast_hash(a) == ast_hash(b) == ast_hash(c)
    assert ast_hash(a) != ast_hash(a.replace("Conv2d", "Conv1d"))


def test_ast_hash_rejects_broken_code():
    with pytest.raises(SyntaxError):
        ast_hash("def broken(:\n")
