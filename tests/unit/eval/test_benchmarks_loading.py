"""The registry, loading from the hub's layout, column errors, the offline error, prompts and --limit."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from nemo_spatial.errors import UserError
from nemo_spatial.eval.benchmarks import BENCHMARKS, PAPER_KEYS, resolve_benchmarks
from nemo_spatial.eval.loading import load_samples
from nemo_spatial.eval.prompts import TEMPLATES, build_prompt, pixel_bounds
from nemo_spatial.eval.runner import limit_samples
from nemo_spatial.eval.synth import write_fixture, write_fixtures

UPSTREAM_KEYS = {
    "cv-bench", "cv-bench-2D", "cv-bench-3D", "blink-spatial", "blink-depth", "blink-object", "blink-counting",
    "blink-multi-view", "blink-jigsaw", "3dsrbench", "3dsrbench_full", "spatialreasoner", "robospatial",
    "robospatial_rgb", "lego", "stvqa", "hallusionbench", "realworld_qa", "spatialbench", "mmvp",
}  # fmt: skip


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_fixtures(tmp_path_factory.mktemp("eval-data"))


def test_registry_has_upstream_and_the_papers_four() -> None:
    assert UPSTREAM_KEYS | {"mmstar", "vstar", "mme-realworld-lite", "mindcube-tiny"} == set(BENCHMARKS)
    assert [b.key for b in resolve_benchmarks("paper")] == list(PAPER_KEYS)
    assert len(resolve_benchmarks("all,cv-bench")) == len(BENCHMARKS)
    with pytest.raises(UserError, match="unknown benchmark 'cv-bench-4D'"):
        resolve_benchmarks("cv-bench-4D")


@pytest.mark.parametrize("key", list(BENCHMARKS))
def test_every_benchmark_loads_and_prompts(data_dir: Path, key: str) -> None:
    bench = BENCHMARKS[key]
    samples = load_samples(bench, data_dir)
    assert len(samples) == (16 if key == "cv-bench" else 8)
    expected_images = {"blink-multi-view": 2, "blink-jigsaw": 3, "robospatial": 2, "mindcube-tiny": 2}.get(key, 1)
    assert all(len(s.images) == expected_images for s in samples)
    for template in TEMPLATES:
        prompt = build_prompt(samples[0], template, pixel_bounds(template, 3136, 12544), bench.image_base64)
        assert len(prompt.images) == expected_images
        assert "<image>" not in prompt.text
        if template in ("spatialthinker", "upstream"):
            width, height = _original_size(samples[0], bench.image_base64)  # original pixels, as in training
            assert f"({width} x {height})" in prompt.text
        if template == "upstream":
            assert "{Width} x {Height}" in prompt.text  # D1, reproduced on purpose
        if template == "spatialthinker":
            assert "{Width}" not in prompt.text and "Now answer the following question:" in prompt.text


def _original_size(sample, base64_images: bool) -> tuple[int, int]:
    from nemo_spatial.eval.prompts import decode

    return decode(sample.images[0], base64_images).size


def test_golds_and_choices_in_their_stored_forms(data_dir: Path) -> None:
    sr = load_samples(BENCHMARKS["spatialreasoner"], data_dir)[0]
    assert sr.choices == ["4", "3", "2", "1"]  # stored as a string of a list
    mme = load_samples(BENCHMARKS["mme-realworld-lite"], data_dir)[0]
    assert mme.choices is not None and mme.choices[0] == "option 0"  # "(A) " prefix removed
    hall = load_samples(BENCHMARKS["hallusionbench"], data_dir)
    assert hall[0].choices == ["Yes", "No"] and hall[0].meta["set_id"] == "0"
    cv = load_samples(BENCHMARKS["cv-bench-3D"], data_dir)
    assert {s.meta["source"] for s in cv} == {"Omni3D"}  # the 3D config's file, from the dataset card


def test_missing_column_names_column_file_and_columns(tmp_path: Path) -> None:
    folder = write_fixture(tmp_path, BENCHMARKS["mmvp"], 2)
    path = folder / "data" / "train-00000-of-00001.parquet"
    table = pq.read_table(path)
    pq.write_table(table.rename_columns(["image", "question", "label"]), path)
    with pytest.raises(UserError, match=r"column 'text' is not in .*train-00000-of-00001.parquet; columns there: "
                                         r"image, question, label"):  # fmt: skip
        load_samples(BENCHMARKS["mmvp"], tmp_path)


def test_no_local_copy_names_the_download_command(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="huggingface-cli download --repo-type dataset lmms-lab/HallusionBench"):
        load_samples(BENCHMARKS["hallusionbench"], tmp_path)


def test_offline_hub_error_names_dataset_and_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    expected = r"cannot load vstar from the hub \(lmms-lab-encoder/vstar-bench.*download --repo-type dataset lmms-lab"
    with pytest.raises(UserError, match=expected):
        load_samples(BENCHMARKS["vstar"], None)


def test_wrong_split_lists_the_files_there(tmp_path: Path) -> None:
    folder = tmp_path / "lego"
    folder.mkdir()
    pq.write_table(pa.table({"x": [1]}), folder / "validation.parquet")
    with pytest.raises(UserError, match="split 'train'.*files there: validation.parquet"):
        load_samples(BENCHMARKS["lego"], tmp_path)


def test_limit_is_seeded_stratified_and_in_dataset_order(data_dir: Path) -> None:
    samples = load_samples(BENCHMARKS["cv-bench"], data_dir)  # 16 rows: Count, Relation, Distance, Depth x 4
    picked = limit_samples(samples, 8, seed=42)
    assert [s.row for s in picked] == sorted(s.row for s in picked)
    assert {t: sum(s.task == t for s in picked) for t in ("Count", "Relation", "Distance", "Depth")} == {
        "Count": 2, "Relation": 2, "Distance": 2, "Depth": 2}  # fmt: skip
    assert [s.row for s in limit_samples(samples, 8, seed=42)] == [s.row for s in picked]
    assert [s.row for s in limit_samples(samples, 8, seed=7)] != [s.row for s in picked]
    assert limit_samples(samples, 100, seed=42) == samples


def test_limit_draws_whole_pairs_for_pair_metrics(data_dir: Path) -> None:
    samples = load_samples(BENCHMARKS["mmvp"], data_dir)
    rows = [s.row for s in limit_samples(samples, 4, seed=1, paired=True)]
    assert len(rows) == 4 and all(rows[i] // 2 == rows[i + 1] // 2 for i in (0, 2))


def test_mindcube_setting_is_the_task(data_dir: Path) -> None:
    assert {s.task for s in load_samples(BENCHMARKS["mindcube-tiny"], data_dir)} == {"among", "around", "rotation"}
