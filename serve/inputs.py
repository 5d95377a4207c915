"""Request bodies -> checked values, in memory only: multipart parsing without temporary files, image
decoding with size and pixel limits, and the per-row spec fields with the CLI's messages."""

import io
import math

from PIL import Image, UnidentifiedImageError
from python_multipart.multipart import MultipartParser, parse_options_header

from pstyle.projectors.image_io import to_rgb
from pstyle.stylize import layer_weights

from pstyle.serve.errors import ApiError

SPEC_FIELDS = ('weights', 'swap_res', 'blend_width', 'preset', 'style_strength', 'preserve_color')
FORM_SLACK = 64 * 1024  # Bytes of form fields and multipart framing allowed on top of the image.


async def read_body(request, limit, slack=0):
    """The request body, refusing (413) anything over `limit` + `slack` bytes before and while reading it."""
    declared = request.headers.get('content-length')
    if declared is not None and declared.isdigit() and int(declared) > limit + slack:
        raise too_large(int(declared), limit)
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit + slack:
            raise too_large(total, limit)
        chunks.append(chunk)
    return b''.join(chunks)


def too_large(size, limit):
    return ApiError(413, 'too_large', f'the upload is larger than this server\'s limit of {limit / 2**20:.3g} MiB '
                                      f'(--max-upload-mb); got at least {size / 2**20:.3g} MiB')


def parse_multipart(body, content_type):
    """multipart/form-data bytes -> {field name: bytes} (the last value of a repeated field wins)."""
    kind, params = parse_options_header(content_type or '')
    if kind != b'multipart/form-data' or b'boundary' not in params:
        raise ApiError(400, 'bad_request', 'send the photo as multipart/form-data with a field named "image"')
    fields, state = {}, dict(header=b'', value=b'', headers={}, data=[])

    def on_header_field(data, start, end):
        state['header'] += data[start:end]

    def on_header_value(data, start, end):
        state['value'] += data[start:end]

    def on_header_end():
        state['headers'][state['header'].lower()] = state['value']
        state['header'] = state['value'] = b''

    def on_part_data(data, start, end):
        state['data'].append(bytes(data[start:end]))

    def on_part_end():
        _, disposition = parse_options_header(state['headers'].get(b'content-disposition', b''))
        name = disposition.get(b'name', b'').decode('utf-8', 'replace')
        fields[name] = b''.join(state['data'])
        state.update(headers={}, data=[])

    parser = MultipartParser(params[b'boundary'], dict(
        on_header_field=on_header_field, on_header_value=on_header_value, on_header_end=on_header_end,
        on_part_data=on_part_data, on_part_end=on_part_end))
    try:
        parser.write(body)
        parser.finalize()
    except Exception as e:  # noqa: BLE001 -- any framing error is the client's
        raise ApiError(400, 'bad_request', f'malformed multipart body ({type(e).__name__}: {e})') from None
    return fields


def decode_image(data, max_pixels):
    """Image bytes -> upright 8-bit RGB PIL image; 400 for not-an-image or truncated, 413 over max_pixels."""
    if not data:
        raise ApiError(400, 'bad_image', 'the "image" field is empty')
    try:
        img = Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ApiError(400, 'bad_image', f'not an image Pillow can read ({type(e).__name__})') from None
    with img:
        width, height = img.size
        if width * height > max_pixels:  # Before decoding: a decompression bomb never expands.
            raise ApiError(413, 'too_large', f'the image has {width}x{height} = {width * height} pixels, over this '
                                             f'server\'s limit of {max_pixels} (--max-pixels)')
        try:
            img.load()
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
            raise ApiError(400, 'bad_image', f'the image is truncated or corrupt ({type(e).__name__}: {e})') from None
        return to_rgb(img)


# ----------------------------------------------------------------------------
# Fields.

def _bad(message):
    return ApiError(422, 'bad_spec', message)


def as_bool(value, name):
    if isinstance(value, bool) or value is None:
        return value
    text = str(value).strip().lower()
    if text in ('1', 'true', 'yes', 'on'):
        return True
    if text in ('0', 'false', 'no', 'off', ''):
        return False
    raise _bad(f'{name} must be true or false, got {value!r}')


def as_number(value, name, kind):
    if value is None or value == '':
        return None
    if isinstance(value, bool):
        raise _bad(f'--{name.replace("_", "-")}: expected {"an integer" if kind is int else "a number"}, got {value!r}')
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise _bad(f'--{name.replace("_", "-")}: expected {"an integer" if kind is int else "a number"}, got {value!r}') from None
    if kind is float and not math.isfinite(number):
        raise _bad(f'--{name.replace("_", "-")}: expected a finite number, got {value!r}')
    return number


def spec_from_fields(fields, default):
    """The per-row spec from form or JSON fields, with make_spec's (the CLI's) checks and messages.
    No spec field at all: the style's default spec."""
    if all(fields.get(k) in (None, '') for k in SPEC_FIELDS):
        return default
    weights = fields.get('weights')
    if isinstance(weights, (list, tuple)):
        weights = ','.join(str(v) for v in weights)
    strength = as_number(fields.get('style_strength'), 'style_strength', float)
    try:
        return layer_weights.make_spec(
            weights=weights or None, swap_res=as_number(fields.get('swap_res'), 'swap_res', int),
            blend_width=as_number(fields.get('blend_width'), 'blend_width', float), preset=fields.get('preset') or None,
            style_strength=1.0 if strength is None else strength,
            preserve_color=bool(as_bool(fields.get('preserve_color'), 'preserve_color')))
    except layer_weights.LayerWeightError as e:
        raise _bad(str(e)) from None


def resolve(style, spec):
    """WeightSpec -> [num_ws] weights for the style's network, 422 with the CLI's message when it does not fit."""
    try:
        return style.weights(spec)
    except layer_weights.LayerWeightError as e:
        raise _bad(str(e)) from None
