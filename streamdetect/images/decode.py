"""Decoding fetched bytes into RGB pixels, with the pixel limit checked before decompression."""

from __future__ import annotations

import io

from PIL import Image

from streamdetect.images.policy import ImageError, ImagePolicy

# Formats an upload can plausibly be in. Leaving out the rest keeps hostile bytes away from
# Pillow's rarer parsers (and EPS, which would hand them to Ghostscript).
FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF", "AVIF")  # JPEG covers MPO

def decode_image(data: bytes, policy: ImagePolicy) -> Image.Image:
    """Decode ``data`` into a loaded RGB image no larger than ``policy.max_pixels``."""
    try:
        img = Image.open(io.BytesIO(data), formats=FORMATS)
        width, height = img.size
        # Checked before load() so an image that declares huge dimensions is never decompressed.
        if width * height > policy.max_pixels:
            raise ImageError(
                "too_large",
                f"image is {width}x{height} = {width * height} pixels, over the limit of {policy.max_pixels}; send a smaller image",
            )
        img.load()
        return _to_rgb(img)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        # Pillow's own guard can fire inside open() before the policy check above gets a look
        # (the warning only when warnings are errors, as under `pytest -W error`).
        raise ImageError("too_large", f"image declares too many pixels ({e}); send a smaller image") from e
    except Exception as e:  # Pillow plugins raise many types on hostile input; all mean undecodable
        raise ImageError(
            "undecodable", f"data ({len(data)} bytes) is not a complete image Pillow can decode: {type(e).__name__}: {e}"
        ) from e


def _to_rgb(img: Image.Image) -> Image.Image:
    """Flatten transparency onto white (as transformers' convert_to_rgb does, so the detector
    sees what the platform's VLM sees) and scale 16-bit grayscale instead of clipping it."""
    if img.mode == "RGB":
        return img
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    if img.mode.startswith("I;16"):
        img = img.convert("I").point(lambda v: v * (1 / 256)).convert("L")
    return img.convert("RGB")
