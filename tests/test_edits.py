"""SEARCH/REPLACE edits against a parent: what applies, and the reason given for every answer that does not."""

from __future__ import annotations

import functools

import pytest

from agentarch.llm.edits import Applied, EditError, apply, looks_like_edit, parse
from agentarch.llm.prompts import recipe_of, render
from agentarch.search.objectives import Goals
from agentarch.tasks.registry import get_task

PARENT = """import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, in_shape, num_classes):
        super().__init__()
        self.conv = nn.Conv2d(in_shape[0], 16, 3, padding=1)
        self.act = nn.ReLU()
        self.fc = nn.Linear(16 * in_shape[1] * in_shape[2], num_classes)

    def forward(self, x):
        x = self.act(self.conv(x))
        return self.fc(x.flatten(1))
"""


def block(search: str, replace: str) -> str:
    return f"<<<<<<< SEARCH\n{search}\n=======\n{replace}\n>>>>>>> REPLACE\n"


WIDER = block(
    "        self.conv = nn.Conv2d(in_shape[0], 16, 3, padding=1)",
    "        self.conv = nn.Conv2d(in_shape[0], 32, 3, padding=1)",
)
FC = block(
    "        self.fc = nn.Linear(16 * in_shape[1] * in_shape[2], num_classes)",
    "        self.fc = nn.Linear(32 * in_shape[1] * in_shape[2], num_classes)",
)


def reason(answer: str, parent: str = PARENT) -> str:
    with pytest.raises(EditError) as err:
        apply(parent, answer)
    return str(err.value)


# -- what applies -----------------------------------------------------------------------------------


def test_a_multi_block_edit_applies_in_order_inside_a_fence_with_prose_around():
    answer = f"Intent: wider convolution.\n\n```python\n{WIDER}\n{FC}```\n\nThat doubles the width."
    applied = apply(PARENT, answer)
    assert applied == Applied(
        code=PARENT.replace("16, 3", "32, 3").replace("Linear(16", "Linear(32"), blocks=2, fuzz=[]
    )


def test_each_block_in_its_own_fence_and_lenient_markers():
    answer = (
        "First:\n```\n<<<<<<<< search\n"
        "        self.act = nn.ReLU()\n  =====  \n        self.act = nn.GELU()\n>>>>> Replace\n```\n"
        "Then:\n```python\n" + FC + "```\n"
    )
    code = apply(PARENT, answer).code
    assert "nn.GELU()" in code and "Linear(32" in code


def test_an_empty_replace_deletes_and_a_blank_replace_line_stays():
    deleted = apply(PARENT, block("        self.act = nn.ReLU()", "").replace("=======\n\n", "=======\n")).code
    assert "self.act" not in deleted.split("forward")[0] and deleted.count("\n") == PARENT.count("\n") - 1
    blank = apply(PARENT, block("        self.act = nn.ReLU()", "")).code
    assert blank.count("\n") == PARENT.count("\n")


def test_a_later_block_may_edit_what_an_earlier_one_wrote():
    answer = WIDER + block(
        "        self.conv = nn.Conv2d(in_shape[0], 32, 3, padding=1)",
        "        self.conv = nn.Conv2d(in_shape[0], 64, 3, padding=1)",
    )
    assert "64, 3" in apply(PARENT, answer).code


def test_crlf_in_the_answer_and_the_parent_is_read_as_lf_and_noted():
    applied = apply(PARENT.replace("\n", "\r\n"), WIDER.replace("\n", "\r\n"))
    assert applied.code == PARENT.replace("16, 3", "32, 3")
    assert applied.fuzz == ["line endings: CR or CRLF read as LF"]


def test_trailing_whitespace_is_a_second_pass_and_reported():
    answer = block("        self.act = nn.ReLU()   ", "        self.act = nn.SiLU()")
    applied = apply(PARENT, answer)
    assert "nn.SiLU()" in applied.code and applied.fuzz == ["block 1: matched ignoring trailing whitespace"]
    parent = PARENT.replace("nn.ReLU()\n", "nn.ReLU()  \n")  # the parent's own trailing spaces
    assert apply(parent, block("        self.act = nn.ReLU()", "        self.act = nn.SiLU()")).fuzz


def test_applying_is_deterministic_and_the_inverse_edit_gives_the_parent_back():
    edited = apply(PARENT, WIDER + FC).code
    assert apply(PARENT, WIDER + FC).code == edited
    inverse = block(*reversed(WIDER.split("\n")[1:4:2])) + block(*reversed(FC.split("\n")[1:4:2]))
    assert apply(edited, inverse).code == PARENT
    assert "is not in the parent" in reason(WIDER, edited)  # the same edit twice: its SEARCH text is gone


def test_looks_like_edit_tells_a_diff_from_a_full_module():
    assert looks_like_edit(WIDER) and looks_like_edit(f"```python\n{WIDER}```")
    assert looks_like_edit(">>>>>>> REPLACE")  # malformed, but meant as an edit: `apply` says why
    assert not looks_like_edit(f"Intent: a CNN.\n\n```python\n{PARENT}```")
    assert not looks_like_edit("Heading\n=======\n\ntext")


# -- what does not, and why -------------------------------------------------------------------------


def test_no_blocks_at_all():
    assert "holds no SEARCH/REPLACE block" in reason(f"```python\n{PARENT}```")
    assert "holds no SEARCH/REPLACE block" in reason("")


def test_missing_divider():
    answer = WIDER.replace("=======\n", "")
    assert "block 1 (from line 1) has no `=======` divider before its `>>>>>>> REPLACE` at line 4" in reason(answer)


def test_unterminated_block_says_the_answer_was_cut_off():
    text = reason(FC + WIDER.replace(">>>>>>> REPLACE\n", ""))
    assert "block 2 (from line 6) has no `>>>>>>> REPLACE` line" in text and "cut off" in text
    assert "has no `=======` divider: the answer ends" in reason("<<<<<<< SEARCH\n        self.act = nn.ReLU()\n")


def test_nested_markers_and_second_divider():
    nested = "<<<<<<< SEARCH\n" + WIDER
    assert "line 2 opens another `<<<<<<< SEARCH` before block 1's `=======` divider" in reason(nested)
    assert "blocks cannot nest" in reason(WIDER.replace("=======\n", "=======\n<<<<<<< SEARCH\n"))
    assert "second `=======` divider at line 4" in reason(WIDER.replace("=======\n", "=======\n=======\n"))


def test_replace_marker_without_search():
    with pytest.raises(EditError) as err:
        apply(PARENT, "=======\n        self.act = nn.GELU()\n>>>>>>> REPLACE\n")
    assert "line 3 has `>>>>>>> REPLACE` without a `<<<<<<< SEARCH`" in str(err.value) and err.value.block is None


def test_empty_or_blank_search():
    assert "block 1 (from line 1) has an empty SEARCH text" in reason("<<<<<<< SEARCH\n=======\nx = 1\n>>>>>>> REPLACE")
    assert "empty SEARCH text" in reason(block("   \n", "x = 1"))


def test_two_matches_name_both_places():
    with pytest.raises(EditError) as err:
        act = "        self.act = nn.ReLU()"
        apply(PARENT, WIDER + block(act, f"{act}\n{act}") + block(act, "        self.act = nn.GELU()"))
    assert str(err.value).startswith("block 3's SEARCH text matches 2 places (in the code after blocks 1-2 applied)")
    assert "line 9, line 10" in str(err.value) and err.value.block == 3


def test_zero_matches_show_the_closest_region_and_the_first_difference():
    text = reason(FC + block("        x = self.act(self.conv1(x))\n        return self.fc(x.flatten(1))", "pass"))
    assert text.startswith("block 2's SEARCH text (2 lines) is not in the parent (in the code after block 1 applied)")
    assert "The closest region is lines 13-14" in text
    assert "        x = self.act(self.conv(x))\n        return self.fc(x.flatten(1))\n```" in text
    assert "Its line 1 is `x = self.act(self.conv1(x))` where the parent has `x = self.act(self.conv(x))`" in text


def test_other_indentation_is_refused_with_that_reason():
    text = reason(block("self.act = nn.ReLU()", "self.act = nn.GELU()"))
    assert "matches line 9 only with other indentation" in text


def test_a_block_whose_lines_an_earlier_block_changed():
    answer = WIDER + block(
        "        self.conv = nn.Conv2d(in_shape[0], 16, 3, padding=1)\n        self.act = nn.ReLU()", "pass"
    )
    assert "an earlier block changed those lines" in reason(answer)


def test_a_fence_inside_a_block():
    text = reason(block("```python\n        self.act = nn.ReLU()", "        self.act = nn.GELU()\n```"))
    assert "block 1 (from line 1) has a ``` fence line inside its SEARCH text" in text


def test_an_edit_that_changes_nothing():
    same = block("        self.act = nn.ReLU()", "        self.act = nn.ReLU()")
    assert "the edit (1 block) changes nothing" in reason(same)
    assert "the edit (2 blocks) changes nothing" in reason(WIDER + block(*reversed(WIDER.split("\n")[1:4:2])))


def test_parse_keeps_the_blocks_texts_and_lines():
    blocks = parse("prose\n" + WIDER + FC)
    assert [b.line for b in blocks] == [2, 7]
    assert blocks[0].search == "        self.conv = nn.Conv2d(in_shape[0], 16, 3, padding=1)\n"


# -- the prompts ------------------------------------------------------------------------------------


def row(id: int, val: float, code: str = PARENT, analysis: str | None = None) -> dict:
    """A few-shot row as agentarch.llm.fewshot hands it to the templates."""
    return {"id": id, "code": code, "val_accuracy": val, "params": 12_345, "proposer": "llm", "analysis": analysis}


def test_the_edit_prompt_shows_the_parent_the_others_in_brief_and_a_format_that_applies():
    parent = row(7, 0.9123, analysis="Wider helped; try GELU.")
    examples = [parent, row(3, 0.95, code="# the best one's code\n", analysis="Deep and narrow.")]
    text = render(
        "edit.j2",
        None,
        task=get_task("digits"),
        examples=examples,
        parent=parent,
        batch_note="Try attention.",
        goals=None,
        notebook={"after": 10, "text": "Dropout helps (#3)."},
        recipe_of=functools.partial(recipe_of, get_task("digits")),
    )
    assert text.startswith("## Task: digits")
    assert "## The parent: candidate 7" in text and "Validation accuracy: 91.23%" in text and "12,345" in text
    assert "- Analysis: Wider helped; try GELU." in text and f"```python\n{PARENT.strip()}\n```" in text
    assert "- Candidate 3 (llm): validation 95.00%, 12,345 parameters. Deep and narrow." in text
    assert "the best one's code" not in text and "Dropout helps (#3)." in text
    assert "reaches a higher validation accuracy" in text and text.rstrip().endswith("Try attention.")
    example = text[text.index("<<<<<<< SEARCH") : text.index(">>>>>>> REPLACE") + len(">>>>>>> REPLACE")]
    assert "nn.GELU()" in apply(PARENT, example).code  # the format shown is the format applied


def test_the_edit_prompt_with_several_objectives_and_another_metric():
    goals = Goals.parse(["val:min", "latency:min"], ["params<=200000"])
    parent = row(4, 1.23456) | {"latency_ms": 2.5, "standing": {"front": 1, "of": 2}}
    text = render(
        "edit.j2",
        None,
        task=get_task("stdlib-bytes"),
        examples=[parent],
        parent=parent,
        batch_note="",
        goals=goals,
        notebook=None,
        recipe_of=functools.partial(recipe_of, get_task("stdlib-bytes")),
    )
    assert "Validation bits per byte: 1.235" in text and "- latency_ms: 2.5" in text and "front 1 (2 candidates" in text
    assert "Hard limits (a design that breaks one never counts): params<=200000" in text
    assert "Other trained candidates" not in text and "improves on its trade-off" in text


def test_the_retry_prompt_shows_the_reason_and_the_parent_again():
    with pytest.raises(EditError) as err:
        apply(PARENT, block("        self.act = nn.Relu()", "        self.act = nn.GELU()"))
    text = render("edit_retry.j2", None, task=get_task("digits"), parent=row(7, 0.9), reason=str(err.value))
    assert "candidate 7 for digits could not be applied" in text
    assert f"```text\n{err.value}\n```" in text and f"```python\n{PARENT.strip()}\n```" in text


def test_a_search_text_that_leaves_lines_out():
    answer = block("    def forward(self, x):\n        ...\n        return self.fc(x.flatten(1))", "pass")
    assert "its line 2 is `...`, which leaves lines out" in reason(answer)
