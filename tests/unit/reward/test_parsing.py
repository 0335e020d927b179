"""The linear-time parsers equal upstream's regular expressions, and the prompt's image size is checked."""

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nemo_spatial.reward import r1v
from nemo_spatial.reward.parsing import (
    box_as_floats,
    first_block,
    first_block_one_line,
    is_valid_object,
    is_valid_relation,
    label_of,
    parse_image_size,
    parse_scene,
)

# Text built from the pieces that matter, so that tags, nesting and newlines occur often.
pieces = st.sampled_from(
    ["<answer>", "</answer>", "<think>", "</think>", "<scene>", "</scene>", "\n", " ", "\t", "\u2003", "x", "<", ">"]
)
text = st.lists(pieces, max_size=14).map("".join)


@settings(max_examples=600)
@given(text)
def test_first_block_equals_dotall_regex(sample):
    match = re.search(r"<answer>(.*?)</answer>", sample, re.DOTALL)
    assert first_block(sample, "answer") == (match.group(1) if match else None)


@settings(max_examples=600)
@given(text)
def test_first_block_one_line_equals_regex_without_dotall(sample):
    match = re.search(r"<answer>(.*?)</answer>", sample)
    assert first_block_one_line(sample, "answer") == (match.group(1) if match else None)


@pytest.mark.parametrize(
    "sample",
    [
        "<answer>\n" * 3 + "</answer>",  # every opening tag sees the same closing tag past a newline
        "<answer>\n</answer><answer>x</answer>",  # the closing tag found first lies behind the second opening
        "<answer>a\n<answer>b</answer>",
        "<answer>\n<answer></answer>\n</answer>",
    ],
)
def test_first_block_one_line_on_line_per_tag_text(sample):
    match = re.search(r"<answer>(.*?)</answer>", sample)
    assert first_block_one_line(sample, "answer") == (match.group(1) if match else None)


@settings(max_examples=600)
@given(text)
def test_r1v_format_equals_upstream_fullmatch(sample):
    match = re.fullmatch(r"<think>.*?</think>\s*<answer>.*?</answer>", sample, re.DOTALL)
    assert r1v.format_reward(sample) == (1.0 if match else 0.0)


def test_scene_parsing():
    assert parse_scene('<scene> {"objects": []} </scene>') == {"objects": []}
    assert parse_scene("<scene>[1, 2]</scene>") == {}
    assert parse_scene("<scene>{not json}</scene>") == {}
    assert parse_scene("no scene") == {}
    assert parse_scene("<scene>" + "[" * 100_000 + "</scene>") == {}  # RecursionError inside json


@pytest.mark.parametrize(
    ("problem", "message"),
    [
        ("no size here", "has no 'Image size"),
        ("Image size: 640 x 480", "has no 'Image size"),  # the parentheses are required
        ("Image size: (640.5 x 480)", "not two integers"),
        ("Image size: (0 x 480)", "must be positive"),
    ],
)
def test_image_size_errors_say_what_is_wrong(problem, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_image_size(problem)


def test_image_size():
    assert parse_image_size("...\nImage size: (640 x 480)\nNow answer") == (640, 480)


def test_object_and_relation_validity():
    assert is_valid_object({"id": "fire_hydrant.12", "bbox": [0, 1.5, True, 3]})  # bool counts, as upstream
    assert not is_valid_object({"id": "man.1", "bbox": [0, 1, 2, 3], "score": 1})
    assert not is_valid_object({"id": "man1", "bbox": [0, 1, 2, 3]})
    assert not is_valid_object({"id": "man.1", "bbox": [0, 1, 2]})
    assert not is_valid_object({"id": "man.1", "bbox": [0, 1, 2, "3"]})
    assert is_valid_relation({"subject": "man.1", "predicate": "on", "object": "horse.2", "extra": 1})
    assert not is_valid_relation({"subject": "man.1", "predicate": 3, "object": "horse.2"})
    assert not is_valid_relation({"subject": "man", "predicate": "on", "object": "horse.2"})


def test_labels_are_normalised_as_upstream():
    assert label_of("Fire_Hydrant.2") == "fire hydrant"
    assert label_of("t-shirt.1") == "t shirt"
    assert label_of(" man .1") == "man"


def test_huge_integers_become_infinite_floats():
    assert box_as_floats([10**400, 0, 1, 1])[0] == float("inf")
    with pytest.raises(ValueError, match="four numbers"):
        box_as_floats([0, 1, 2])
