"""Input hygiene for outside images: odd modes converted, bad files refused with the source named."""

import base64
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from rec_core.images import ImageInputError, gallery_markdown, load_image


def encode(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def png_with_declared_size(width: int, height: int) -> bytes:
    """A PNG whose header claims `width` x `height` but holds a few bytes of data: a decompression bomb's shape."""
    raw = encode(Image.new("L", (1, 1)))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = b"IHDR" + header
    ihdr = struct.pack(">I", len(header)) + chunk + struct.pack(">I", zlib.crc32(chunk) & 0xFFFFFFFF)
    return raw[:8] + ihdr + raw[8 + 25 :]


def test_rgb_passes_through_unchanged():
    image = load_image(encode(Image.new("RGB", (7, 5), (10, 20, 30))))
    assert image.mode == "RGB" and image.size == (7, 5) and image.getpixel((0, 0)) == (10, 20, 30)


@pytest.mark.parametrize(
    "image, fmt, expected",
    [
        (Image.new("RGBA", (4, 4), (255, 0, 0, 0)), "PNG", (255, 255, 255)),  # fully transparent -> background
        (Image.new("RGBA", (4, 4), (255, 0, 0, 255)), "PNG", (255, 0, 0)),
        (Image.new("LA", (4, 4), (0, 255)), "PNG", (0, 0, 0)),
        (Image.new("P", (4, 4), 0), "GIF", (0, 0, 0)),
        (Image.new("1", (4, 4), 1), "PNG", (255, 255, 255)),
        (Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "JPEG", None),  # pure red in CMYK
        (Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "TIFF", (255, 0, 0)),
    ],
    ids=["rgba-transparent", "rgba-opaque", "la", "palette", "bilevel", "cmyk-jpeg", "cmyk-tiff"],
)
def test_odd_modes_become_rgb(image, fmt, expected):
    converted = load_image(encode(image, fmt))
    assert converted.mode == "RGB" and converted.size == image.size
    if expected is None:
        red, green, blue = converted.getpixel((4, 4))
        assert red > 200 and green < 60 and blue < 60
    else:
        assert converted.getpixel((0, 0)) == expected


def test_palette_with_transparency_is_flattened_on_white():
    image = Image.new("P", (4, 4), 1)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    raw = encode(image, "PNG", transparency=1)
    assert Image.open(io.BytesIO(raw)).mode == "P"
    assert load_image(raw).getpixel((0, 0)) == (255, 255, 255)


def test_sixteen_bit_grey_is_scaled_not_clipped():
    ramp = np.linspace(0, 65535, 64 * 64).astype(np.uint16).reshape(64, 64)
    raw = encode(Image.fromarray(ramp))
    assert Image.open(io.BytesIO(raw)).mode.startswith("I")
    converted = np.asarray(load_image(raw))
    assert converted[0, 0, 0] == 0 and converted[-1, -1, 0] == 255
    assert 100 < converted[32, 0, 0] < 156  # mid-grey stays mid-grey


def test_float_image_is_scaled_by_its_range():
    values = np.linspace(-1.0, 1.0, 16, dtype=np.float32).reshape(4, 4)
    converted = np.asarray(load_image(encode(Image.fromarray(values, mode="F"), "TIFF")))
    assert converted[0, 0, 0] == 0 and converted[-1, -1, 0] == 255


def test_exif_rotation_is_applied():
    image = Image.new("RGB", (20, 10), (0, 128, 0))
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    assert load_image(encode(image, "JPEG", exif=exif)).size == (10, 20)


def test_animated_gif_gives_its_first_frame():
    frames = [Image.new("P", (6, 6), i) for i in range(3)]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:])
    assert load_image(buffer.getvalue()).size == (6, 6)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_file_is_refused_with_its_name(fmt):
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    raw = encode(Image.fromarray(noise), fmt)
    with pytest.raises(ImageInputError, match=r"^upload\.img: is truncated or corrupt"):
        load_image(raw[: len(raw) // 2], name="upload.img")


def test_decompression_bomb_is_refused_before_decoding():
    bomb = png_with_declared_size(100_000, 100_000)
    assert len(bomb) < 200
    with pytest.raises(ImageInputError, match=r"bomb\.png: .*(decompression bomb|over the limit)"):
        load_image(bomb, name="bomb.png")


def test_image_over_the_pixel_cap_is_refused():
    raw = encode(Image.new("RGB", (200, 100)))
    with pytest.raises(ImageInputError, match=r"200x100 = 20,000 pixels, over the limit of 10,000"):
        load_image(raw, max_pixels=10_000)
    assert load_image(raw, max_pixels=20_000).size == (200, 100)


def test_oversized_file_is_refused_before_reading(tmp_path):
    path = tmp_path / "big.png"
    path.write_bytes(encode(Image.new("RGB", (64, 64))) + b"\0" * 4096)
    with pytest.raises(ImageInputError, match=f"{path}: is .* bytes, over the limit of 1,000"):
        load_image(path, max_bytes=1_000)


@pytest.mark.parametrize(
    "content, problem",
    [(b"%PDF-1.4 not an image", "is not an image"), (b"", "is empty")],
    ids=["pdf", "empty"],
)
def test_non_images_are_refused(tmp_path, content, problem):
    path = tmp_path / "photo.jpg"
    path.write_bytes(content)
    with pytest.raises(ImageInputError, match=f"{path}: {problem}"):
        load_image(path)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ImageInputError, match="missing.png: cannot be read"):
        load_image(tmp_path / "missing.png")


def test_path_and_bytes_sources_agree(tmp_path):
    raw = encode(Image.new("RGBA", (5, 5), (1, 2, 3, 255)))
    (tmp_path / "a.png").write_bytes(raw)
    assert load_image(tmp_path / "a.png").tobytes() == load_image(raw).tobytes()


def test_gallery_embeds_decodable_thumbnails():
    markdown = gallery_markdown(
        [("I1: Mug | blue", Image.new("RGB", (300, 300), "blue")), ("I2", Image.new("RGB", (64, 64)))]
    )
    payloads = [part.split(")")[0] for part in markdown.split("data:image/png;base64,")[1:]]
    assert len(payloads) == 2
    thumbnail = Image.open(io.BytesIO(base64.b64decode(payloads[0])))
    assert thumbnail.size == (128, 128)
    assert "I1: Mug / blue" in markdown  # a pipe in a caption must not split the table
