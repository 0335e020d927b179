"""The rollout viewer: pages per sampled step and an index, checked as written and as Chromium renders them."""

import re

import numpy as np
import pytest
from PIL import Image

from nemo_spatial.report.rollout_view import render_rollouts
from nemo_spatial.reward.similarity import TrigramSimilarity
from tests.unit.report.chromium import dump_dom, screenshot
from tests.unit.report.run_fixture import RESPONSES, write_run

GT_BLUE = (0x1F, 0x77, 0xB4)  # the first ground-truth object's colour (html.PALETTE[0])


@pytest.fixture
def rendered(tmp_path):
    run_dir = write_run(tmp_path / "run")
    pages = render_rollouts(run_dir, TrigramSimilarity())
    return run_dir, pages


def _cards(html: str) -> list[str]:
    return re.split(r"<div class='card' id='response-\d+'>", html)[1:]


def test_a_step_page_shows_question_boxes_pairs_texts_and_rewards(rendered):
    run_dir, pages = rendered
    assert [p.relative_to(run_dir).as_posix() for p in pages] == [
        "rollouts/step_000002/index.html", "rollouts/step_000004/index.html", "rollouts/index.html",
    ]  # fmt: skip
    html = pages[0].read_text()
    assert "Q. Where is the man relative to the bike?" in html and "(B) in front of" in html
    assert "Ground-truth answer: <b>(A) behind</b>" in html
    cards = _cards(html)
    assert len(cards) == len(RESPONSES)
    exact, shifted, wrong, extra, broken, no_scene = cards
    # Ground truth solid (2 boxes), predictions dashed, one dotted line per matched pair.
    assert exact.count("<rect") == 4 and exact.count("<line") == 2
    assert exact.count("stroke-dasharray=") == 4  # the two predicted boxes and the two pair lines
    assert "bike.1 with GT 1 (mcIoU 1.00)" in exact and "reward 1.000" in exact
    assert "bike.1 (0.89)" in shifted and "0.929" in shifted  # mcIoU of the shifted box, and its reward
    assert "<span class='bad'>wrong</span>" in wrong and "<span class='ok'>correct</span>" in exact
    assert "tree.1 (unmatched)" in extra and "#7f7f7f" in extra
    assert "the scene is not valid JSON" in broken and "does not pass the format check" in broken
    assert "no &lt;scene&gt;...&lt;/scene&gt; block" in no_scene and "no &lt;think&gt;" in no_scene
    assert "&lt;observe&gt;hm&lt;/observe&gt;" in no_scene  # the text itself, escaped
    assert not re.search(r"(src|href)=['\"]https?:", html)  # nothing from the network


def test_the_index_links_every_step(rendered):
    _, pages = rendered
    index = pages[-1].read_text()
    assert "href='step_000002/index.html'" in index and "href='step_000004/index.html'" in index
    assert "4/6" in index  # scenes passing the format check in each step


def test_a_broken_sample_file_is_named_in_the_index(tmp_path):
    run_dir = write_run(tmp_path / "run")
    (run_dir / "rollouts" / "step_000004" / "rollouts.json").write_text('{"prompt": "cut')
    pages = render_rollouts(run_dir, TrigramSimilarity())
    assert len(pages) == 2 and "not readable: JSONDecodeError" in pages[-1].read_text()


def test_chromium_renders_the_page_with_image_and_boxes(rendered, tmp_path):
    _, pages = rendered
    dom = dump_dom(pages[0], tmp_path / "profile")
    assert dom.count("<svg") == len(RESPONSES) + 1 and "Response 6 of 6" in dom
    assert "bike.1 with GT 1 (mcIoU 1.00)" in dom
    shot = screenshot(pages[0], tmp_path / "step.png", tmp_path / "profile")
    assert shot.stat().st_size > 30_000
    with Image.open(shot) as image:
        assert image.size == (1300, 1600)
        pixels = np.asarray(image.convert("RGB"), dtype=np.int16)
    blue = int((np.abs(pixels - np.array(GT_BLUE)).max(axis=2) < 40).sum())
    assert blue > 500  # the ground-truth box outlines were drawn over the image
    picture = int((np.abs(pixels - np.array((235, 235, 225))).max(axis=2) < 6).sum())
    assert picture > 20_000  # and the image itself (its background colour) is on the page
