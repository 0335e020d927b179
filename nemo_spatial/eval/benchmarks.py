"""The benchmark registry: one small declarative adapter per benchmark key.

Keys 1-17 are upstream's (`evaluation/evals.py` of hunarbatra/SpatialThinker, eval-spec section 1), with the
same hub ids, configs, splits and columns; the last four are the paper's benchmarks that upstream lacks
(eval-spec section 7), with the formats lmms-eval / VLMEvalKit use. Facts marked unverified in eval-spec (†)
are kept as upstream states them; a column that is not there fails loading with the columns that are.

Gold forms (what the `answer` column holds, and how `scoring.py` reads it):
- `letter`: `(C)` or `C` (parentheses stripped, case-insensitive); with stored options, a gold that equals an
  option's text is that option's letter (upstream's D7 never scores such golds).
- `hallusion`: `"1"` is A (Yes), anything else B (No); the options are the fixed `[Yes, No]`.
- `letter_or_free`: a letter when the stripped gold is one letter, else a free-form word or number (RealWorldQA).
- `free`: a word or number compared with the whole answer (SpatialBench).

Generation settings are the same for every benchmark: greedy (temperature 0), 2,048 new tokens, the
checkpoint's repetition penalty made explicit (backends/base.py), as upstream and the paper (zero-shot, greedy,
2,048 tokens). lmms-eval's 16-token budgets for V* and MME-RealWorld assume a direct letter and would cut
every reasoning answer short, so they are not used; `--max-new-tokens` changes the budget for a run.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from nemo_spatial.errors import UserError

LETTER, HALLUSION, LETTER_OR_FREE, FREE = "letter", "hallusion", "letter_or_free", "free"
HALLUSION_OPTIONS = ("Yes", "No")


@dataclass(frozen=True)
class Benchmark:
    """Where a benchmark's rows are and which columns mean what."""

    key: str
    hub_id: str
    split: str
    images: tuple[str, ...]  # image columns, in the order the model sees them; one list column = many images
    question: str
    answer: str
    config: str | None = None
    choices: str | None = None  # stored option texts (a list, or a string holding a Python list)
    task: str | None = None
    id_column: str | None = None
    gold_form: str = LETTER
    metric: str = "accuracy"  # the standard aggregate (metrics.py): accuracy | cv_bench | circular | ...
    options_prefixed: bool = False  # option texts stored as "(A) text" (MME-RealWorld)
    image_base64: bool = False  # image column holds base64 text (MME-RealWorld-Lite)
    extra_columns: tuple[str, ...] = ()  # kept per sample for the standard metric (source, set ids, ...)
    paper_column: str | None = None  # the paper's table column, when the paper reports it
    upstream: bool = True  # in upstream's harness (else: one of the paper's four that upstream lacks)
    notes: str = ""
    tasks: dict[str, int] = field(default_factory=dict)  # upstream's hard-coded task counts, for the record

    @property
    def columns(self) -> tuple[str, ...]:
        """Every column a row must have."""
        named = [*self.images, self.question, self.answer, self.choices, self.task, *self.extra_columns]
        return tuple(dict.fromkeys(c for c in named if c))

    def download_command(self) -> str:
        return f"huggingface-cli download --repo-type dataset {self.hub_id} --local-dir DIR/{self.key}"


def _cv(key: str, config: str, tasks: dict[str, int], column: str | None) -> Benchmark:
    return Benchmark(
        key,
        "nyu-visionx/CV-Bench",
        "test",
        ("image",),
        "prompt",
        "answer",
        config=config,
        choices="choices",
        task="task",
        id_column="idx",
        metric="cv_bench",
        extra_columns=("source",),
        paper_column=column,
        tasks=tasks,
    )


def _blink(key: str, config: str, images: tuple[str, ...], column: str | None = None) -> Benchmark:
    return Benchmark(
        key,
        "BLINK-Benchmark/BLINK",
        "val",
        images,
        "prompt",
        "answer",
        config=config,
        choices="choices",
        id_column="idx",
        paper_column=column,
    )


_3DSR_TASKS = {"height": 350, "location": 875, "orientation": 525, "multi_object": 875}
_ROBO_TASKS = {"configuration": 123, "compatibility": 105}

BENCHMARKS: dict[str, Benchmark] = {
    b.key: b
    for b in (
        _cv("cv-bench", "default", {"Count": 788, "Relation": 650, "Distance": 600, "Depth": 600}, None),
        _cv("cv-bench-2D", "2D", {"Count": 788, "Relation": 650}, "CV-2D"),
        _cv("cv-bench-3D", "3D", {"Distance": 600, "Depth": 600}, "CV-3D"),
        _blink("blink-spatial", "Spatial_Relation", ("image_1",), "BLINK-Rel"),
        _blink("blink-depth", "Relative_Depth", ("image_1",), "BLINK-Depth"),
        _blink("blink-object", "Object_Localization", ("image_1",)),
        _blink("blink-counting", "Counting", ("image_1",)),
        _blink("blink-multi-view", "Multi-view_Reasoning", ("image_1", "image_2")),
        _blink("blink-jigsaw", "Jigsaw", ("image_1", "image_2", "image_3")),
        Benchmark(
            "3dsrbench",
            "hunarbatra/3DSRBench",
            "test",
            ("image",),
            "prompt",
            "answer",
            choices="choices",
            task="task",
            id_column="index",
            metric="circular",
            paper_column="3DSRB",
            tasks=_3DSR_TASKS,
            notes="circular/flip: variants share the index before a trailing -N/_N suffix (unverified)",
        ),
        Benchmark(
            "3dsrbench_full",
            "hunarbatra/3DSRBench-Full",
            "test",
            ("image",),
            "prompt",
            "answer",
            choices="choices",
            task="task",
            id_column="index",
            metric="view_pairs",
            tasks=_3DSR_TASKS,
            notes="rows 2k and 2k+1 are one view pair; dataset order is kept",
        ),
        Benchmark(
            "spatialreasoner",
            "hunarbatra/SpatialReasonerEval",
            "train",
            ("image",),
            "prompt",
            "answer",
            choices="choices",
            task="task",
            paper_column="SRE",
            tasks={"Depth": 600, "Distance": 600},
        ),
        Benchmark(
            "robospatial",
            "hunarbatra/RoboSpatial-Home",
            "train",
            ("image", "depth_image"),
            "prompt",
            "answer",
            choices="options",
            task="category",
            tasks=_ROBO_TASKS,
            notes="the depth map is the second image",
        ),
        Benchmark(
            "robospatial_rgb",
            "hunarbatra/RoboSpatial-Home",
            "train",
            ("image",),
            "prompt",
            "answer",
            choices="options",
            task="category",
            paper_column="RoboSpatial-Home",
            tasks=_ROBO_TASKS,
        ),
        Benchmark(
            "lego",
            "hunarbatra/LEGO-Puzzles",
            "train",
            ("image",),
            "prompt",
            "answer",
            choices="choices",
            task="category",
            notes="not in the paper",
        ),
        Benchmark(
            "stvqa",
            "hunarbatra/STVQA-7K",
            "val",
            ("images",),
            "question_with_options",
            "answer_only",
            choices="options",
            task="category",
            id_column="image_id",
            paper_column="STVQA",
        ),
        Benchmark(
            "hallusionbench",
            "lmms-lab/HallusionBench",
            "image",
            ("image",),
            "question",
            "gt_answer",
            task="category",
            gold_form=HALLUSION,
            metric="hallusion",
            paper_column="HallB",
            extra_columns=("subcategory", "set_id", "figure_id", "question_id"),
        ),
        Benchmark(
            "realworld_qa",
            "visheratin/realworldqa",
            "test",
            ("image",),
            "question",
            "answer",
            gold_form=LETTER_OR_FREE,
            paper_column="RWQA",
        ),
        Benchmark(
            "spatialbench",
            "hunarbatra/SpatialBench",
            "train",
            ("image",),
            "text",
            "answer",
            task="category",
            gold_form=FREE,
            paper_column="SpatialBench",
            tasks={"existence": 40, "reach": 40, "size": 40, "positional": 34, "counting": 20},
        ),
        Benchmark(
            "mmvp",
            "hunarbatra/MMVP",
            "train",
            ("image",),
            "text",
            "label",
            metric="pairs",
            paper_column="MMVP",
            notes="pairs are rows 2k, 2k+1 in dataset order; lmms-lab-eval/MMVP fixes swapped golds at 99-100, "
            "279-280 (not applied: scored as the dataset stores them)",
        ),
        Benchmark(
            "mmstar",
            "Lin-Chen/MMStar",
            "val",
            ("image",),
            "question",
            "answer",
            task="category",
            id_column="index",
            metric="l2_macro",
            extra_columns=("l2_category",),
            paper_column="MM-Star",
            upstream=False,
        ),
        Benchmark(
            "vstar",
            "lmms-lab-encoder/vstar-bench",
            "test",
            ("image",),
            "text",
            "label",
            task="category",
            id_column="question_id",
            paper_column="V*",
            upstream=False,
        ),
        Benchmark(
            "mme-realworld-lite",
            "yifanzhang114/MME-RealWorld-lite-lmms-eval",
            "train",
            ("bytes",),
            "question",
            "answer",
            choices="multi-choice options",
            task="category",
            id_column="index",
            options_prefixed=True,
            image_base64=True,
            paper_column="MME-RW-Lite",
            upstream=False,
        ),
        Benchmark(
            "mindcube-tiny",
            "oscarqjh/MindCube_lmmseval",
            "combined",
            ("images",),
            "input_prompt",
            "gt_answer",
            config="tiny",
            id_column="id",
            metric="mindcube_setting",
            paper_column="MindCube-tiny",
            upstream=False,
            notes="all views first, then the text with its <image> slots removed",
        ),
    )
}

# The paper's table (upstream-facts.md, eval-spec section 8), in its column order.
PAPER_KEYS = (
    "3dsrbench", "cv-bench-2D", "cv-bench-3D", "blink-spatial", "blink-depth", "mmvp", "spatialreasoner",
    "spatialbench", "stvqa", "realworld_qa", "hallusionbench", "mmstar", "vstar", "mme-realworld-lite",
    "robospatial_rgb", "mindcube-tiny",
)  # fmt: skip


def get_benchmark(key: str) -> Benchmark:
    if key not in BENCHMARKS:
        raise UserError(
            f"unknown benchmark {key!r}; known: {', '.join(BENCHMARKS)} (or 'paper', 'all'); "
            "see `python -m nemo_spatial.eval list`"
        )
    return BENCHMARKS[key]


def resolve_benchmarks(spec: str) -> list[Benchmark]:
    """`--benchmarks`: comma-separated keys, `paper` (the paper's table) or `all`."""
    keys: list[str] = []
    for part in (p.strip() for p in spec.split(",")):
        if part == "paper":
            keys.extend(PAPER_KEYS)
        elif part == "all":
            keys.extend(BENCHMARKS)
        elif part:
            keys.append(part)
    if not keys:
        raise UserError("--benchmarks is empty; give keys such as cv-bench,blink-spatial, or 'paper' or 'all'")
    return [get_benchmark(k) for k in dict.fromkeys(keys)]


def listing() -> str:
    """The table `python -m nemo_spatial.eval list` prints."""
    rows = [f"{'key':<20} {'hub id (config) / split':<58} {'images':<18} {'gold':<15} metric"]
    for b in BENCHMARKS.values():
        hub = f"{b.hub_id}{f' ({b.config})' if b.config else ''} / {b.split}"
        mark = "" if b.upstream else "  [paper, not upstream]"
        rows.append(f"{b.key:<20} {hub:<58} {'+'.join(b.images):<18} {b.gold_form:<15} {b.metric}{mark}")
    rows.append("")
    rows.append(f"paper = {','.join(PAPER_KEYS)}")
    return "\n".join(rows)
