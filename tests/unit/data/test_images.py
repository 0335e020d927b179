"""Image decoding and upstream's min/max-pixel resizing, including the edge cases."""

from __future__ import annotations

import io
import math

import pytest
from PIL import Image

from nemo_spatial.data.images import MAX_ASPECT_RATIO, ImageError, decode_image, prepare_image, scaled_size

MIN, MAX = 262144, 4194304  # upstream's 512^2 and 2048^2


def _png(size: tuple[int, int], mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size).save(buffer, format="PNG")
    return buffer.getvalue()


def _upstream(width: int, height: int) -> tuple[int, int]:
    """Upstream's ImageProcessMixin.process_image arithmetic, written out independently."""
    if width * height > MAX:
        f = math.sqrt(MAX / (width * height))
        width, height = int(width * f), int(height * f)
    if width * height < MIN:
        f = math.sqrt(MIN / (width * height))
        width, height = int(width * f), int(height * f)
    return width, height


@pytest.mark.parametrize("size", [(640, 480), (1024, 768), (500, 333), (3000, 2000), (4096, 4096), (100, 700)])
def test_scaled_size_is_upstreams(size: tuple[int, int]) -> None:
    assert scaled_size(*size, MIN, MAX) == _upstream(*size)


def test_an_image_within_bounds_is_untouched() -> None:
    image = prepare_image({"bytes": _png((800, 600)), "path": None}, MIN, MAX)
    assert image.size == (800, 600) and image.mode == "RGB"


def test_a_tiny_image_is_scaled_up_to_min_pixels() -> None:
    image = prepare_image(_png((1, 1)), MIN, MAX)
    assert image.size == (512, 512)
    small = prepare_image(_png((30, 20)), MIN, MAX)
    assert small.size == _upstream(30, 20) and small.width * small.height <= MIN
    assert abs(small.width / small.height - 1.5) < 0.01  # aspect kept


def test_a_huge_image_is_scaled_down_to_max_pixels() -> None:
    Image.MAX_IMAGE_PIXELS, before = None, Image.MAX_IMAGE_PIXELS
    try:
        image = prepare_image(Image.new("RGB", (12000, 9000)), MIN, MAX)
    finally:
        Image.MAX_IMAGE_PIXELS = before
    assert image.size == _upstream(12000, 9000) and image.width * image.height <= MAX
    assert abs(image.width / image.height - 12000 / 9000) < 0.01


def test_extreme_aspect_ratios() -> None:
    ok = prepare_image(Image.new("RGB", (3000, 20)), MIN, MAX)  # 150:1 -> scaled up, still accepted by Qwen
    assert ok.size == _upstream(3000, 20)
    with pytest.raises(ImageError, match="aspect ratio above 200"):
        prepare_image(Image.new("RGB", (4020, 20)), MIN, MAX)  # 201:1
    with pytest.raises(ImageError, match="aspect ratio"):
        prepare_image(Image.new("RGB", (1, 5000)), MIN, MAX)
    # 199:1 is allowed, but truncating the upscaled height (1 -> 3.97 -> 3) makes it 263:1: caught before Qwen sees it
    w, h = scaled_size(199, 1, 3136, MAX)
    assert (w, h) == (789, 3) and w / h > MAX_ASPECT_RATIO
    with pytest.raises(ImageError, match=r"199 x 1 \(resized 789 x 3\)"):
        prepare_image(Image.new("RGB", (199, 1)), 3136, MAX)


def test_the_processor_accepts_every_prepared_extreme(tiny_model_dir) -> None:
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    for size in [(1, 1), (3000, 20), (20, 3000), (150, 1), (5000, 4000)]:
        image = prepare_image(Image.new("RGB", size), 28 * 28 * 4, 28 * 28 * 64)
        out = processor.image_processor(images=[image], return_tensors="pt")
        t, gh, gw = out["image_grid_thw"][0].tolist()
        assert t == 1 and gh % 2 == 0 and gw % 2 == 0 and out["pixel_values"].shape[0] == t * gh * gw, size


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "1", "I;16"])
def test_every_mode_becomes_rgb(mode: str) -> None:
    assert prepare_image(Image.new(mode, (600, 500)), MIN, MAX).mode == "RGB"


def test_decoding_accepts_dict_bytes_path_and_lists(tmp_path) -> None:
    path = tmp_path / "x.png"
    path.write_bytes(_png((7, 5)))
    assert decode_image({"bytes": None, "path": str(path)}).size == (7, 5)
    assert decode_image(str(path)).size == (7, 5)
    assert decode_image([{"bytes": _png((3, 2))}]).size == (3, 2)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (b"not an image", "cannot decode"),
        (b"", "empty"),
        (None, "no image"),
        ({"bytes": None, "path": None}, "no image"),
        ([_png((2, 2)), _png((2, 2))], "2 images"),
    ],
)
def test_bad_images_raise_image_error(value: object, message: str) -> None:
    with pytest.raises(ImageError, match=message):
        prepare_image(value, MIN, MAX)
