"""Reading photos: the one function that every image reader here uses.

Photos come from users and from the web, so each is read defensively:

* formats PNG, JPEG (MPO, the multi-picture JPEG of cameras, too), BMP
  and WebP, recognised from the bytes, not the suffix;
* at most `MAX_PIXELS` (100 megapixels) are decoded; the size is read from
  the header first, so a decompression bomb (a 388 kB PNG that declares
  20000 x 20000 pixels) is refused before any decoding;
* empty, truncated and corrupt files are refused;
* the EXIF orientation is applied (a portrait phone photo stands upright);
* colour: grayscale and palette images are expanded, CMYK is converted
  (without its ICC profile: colour profiles are not applied), 16-bit
  grayscale is scaled to 8 bits (65535 -> 255; PIL's own conversion clips
  it to white), and transparent pixels are composited over white.

A refused file raises `UnreadableImageError`, which names the file and why;
readers of folders catch it, skip the file and name it.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
from PIL import Image
from PIL import ImageOps

from id2image_jax import errors

MAX_PIXELS = 100_000_000
# JPEG includes MPO, the multi-picture JPEG of cameras (its first picture).
FORMATS = ('PNG', 'JPEG', 'BMP', 'WEBP')
# Pixel modes these formats decode to; 'I' and 'I;16*' hold 16-bit gray.
_SIXTEEN_BIT = ('I', 'I;16', 'I;16L', 'I;16B', 'I;16N')
_MODES = ('1', 'L', 'P', 'RGB', 'RGBA', 'RGBX', 'RGBa', 'LA', 'La', 'PA',
          'CMYK', 'YCbCr', *_SIXTEEN_BIT)
_WHITE = (255, 255, 255, 255)


class UnreadableImageError(errors.BadInputError):
  """An image file that cannot be used; the message names it and why.

  Attributes:
    why: the reason alone, without the file name.
  """
  why = ''


def _refused(path: str, why: str) -> UnreadableImageError:
  error = UnreadableImageError(f'{path}: {why}')
  error.why = why
  return error


def _decode(path: str, max_pixels: int) -> Image.Image:
  """The decoded, upright image (all of PIL's work on the file's bytes)."""
  if os.path.getsize(path) == 0:
    raise _refused(path, 'empty file')
  try:
    # Our own limit replaces PIL's (a warning above 89 megapixels, an
    # error above 179).
    with warnings.catch_warnings():
      warnings.simplefilter('ignore', Image.DecompressionBombWarning)
      with Image.open(path, formats=FORMATS) as im:
        width, height = im.size
        if width * height > max_pixels:
          raise _refused(path, f'{width} x {height} pixels is over the limit '
                         f'of {max_pixels / 1e6:g} megapixels (a '
                         'decompression bomb?)')
        im.load()
        return ImageOps.exif_transpose(im)
  except UnreadableImageError:
    raise
  except Image.UnidentifiedImageError:
    raise _refused(path, f'not a {"/".join(FORMATS)} image') from None
  except Image.DecompressionBombError as e:
    raise _refused(path, f'over the limit of {max_pixels / 1e6:g} '
                   f'megapixels (a decompression bomb?): {e}') from None
  except Exception as e:  # pylint: disable=broad-except
    # PIL decoding bytes from anywhere raises many types (OSError for a
    # truncated file, SyntaxError, ValueError, struct.error, EOFError...);
    # none of it is our bug, all of it means the file is unusable.
    raise _refused(path, f'cannot decode it ({type(e).__name__}: '
                   f'{e})') from None


def _to_rgb(im: Image.Image, path: str) -> np.ndarray:
  if im.mode not in _MODES:
    raise _refused(path, f'unsupported pixel mode {im.mode}')
  if im.mode in _SIXTEEN_BIT:
    gray = np.asarray(im).astype(np.float64)
    gray = np.clip(np.round(gray / 257.0), 0, 255).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=-1)
  if im.has_transparency_data:
    background = Image.new('RGBA', im.size, _WHITE)
    im = Image.alpha_composite(background, im.convert('RGBA'))
  return np.asarray(im.convert('RGB'))


def read_rgb(path: str | os.PathLike, *, max_pixels: int = MAX_PIXELS
             ) -> np.ndarray:
  """Reads a photo as the module docstring says.

  Args:
    path: an image file.
    max_pixels: refuse images with more pixels than this (PIL refuses
      more than about 179 megapixels whatever this says).

  Returns:
    uint8 [H, W, 3] RGB.

  Raises:
    UnreadableImageError: empty, truncated, corrupt, too large, or not an
      image of `FORMATS`; the message names the file and why.
    FileNotFoundError: there is no such file.
  """
  path = os.fspath(path)
  return _to_rgb(_decode(path, max_pixels), path)
