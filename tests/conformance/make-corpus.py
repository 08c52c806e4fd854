#!/usr/bin/env python3
"""Regenerates the conformance corpus: the generated input files and every expected picture.

Run from the repository root:

    python3 -m venv /tmp/corpus-venv && /tmp/corpus-venv/bin/pip install Pillow numpy OpenEXR
    /tmp/corpus-venv/bin/python tests/conformance/make-corpus.py

It needs ImageMagick (`convert`), libtiff's `tiffcp` and libjpeg-turbo's `cjpeg` on the PATH
(Debian: imagemagick libtiff-tools libjpeg-turbo-progs). The tests never run it: they read the
files it wrote, which are committed.

What it does:

1. Writes every generated input under `files/` (the ones `cases.tsv` marks `source` or whose
   name says how they were made) from one small public-domain picture, `files/png/hopper.png`.
2. Writes `expected/<file>.png` for every case the server must accept, in exactly the pixel
   format `cases.tsv` names for it, from the reference decoder that row names:
   - `source`: the pixels the generator itself encoded (lossless files it wrote);
   - `pillow`: Pillow (with libtiff, libjpeg-turbo, libwebp), orientation applied with
     `ImageOps.exif_transpose`;
   - `magick`: ImageMagick, `-auto-orient`;
   - `openexr`: the OpenEXR library's own reader;
   - `file:PATH`: a reference picture shipped by the suite the input came from.
"""

import io
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib

import numpy as np
from PIL import Image, ImageOps

HERE = os.path.dirname(os.path.abspath(__file__))
FILES = os.path.join(HERE, "files")
EXPECTED = os.path.join(HERE, "expected")
CASES = os.path.join(HERE, "cases.tsv")

# The pixels every generated file is made from: hopper.png (Pillow's test picture of Grace
# Hopper, a US Navy photograph in the public domain), 128x128 RGB.
HOPPER = np.asarray(Image.open(os.path.join(FILES, "png", "hopper.png")).convert("RGB"))

# Generated expectations, filled in while the inputs are written: file -> (pixels, channels, depth).
SOURCE = {}


def out(path):
    full = os.path.join(FILES, path)
    os.makedirs(os.path.dirname(full), exist_ok=True)
    return full


def run(*command, **kwargs):
    subprocess.run(command, check=True, **kwargs)


# ---------------------------------------------------------------------------------------------
# Source pictures


def picture(width, height):
    """A crop of hopper of `width` x `height` (odd sizes exercise partial tiles and strips)."""
    return HOPPER[10 : 10 + height, 20 : 20 + width].copy()


def with_alpha(rgb):
    """`rgb` with an alpha ramp: transparent at the left edge, opaque at the right."""
    height, width, _ = rgb.shape
    alpha = np.tile(np.linspace(0, 255, width).round().astype(np.uint8), (height, 1))
    alpha[: height // 4, :] = 255
    return np.dstack([rgb, alpha])


def sixteen(pixels8):
    """8-bit pixels as 16-bit samples whose low byte differs from the high byte."""
    wide = pixels8.astype(np.uint32) * 257
    ramp = (np.arange(pixels8.size, dtype=np.uint32).reshape(pixels8.shape) * 37) % 211
    return np.clip(wide + ramp - 105, 0, 65535).astype(np.uint16)


def gray(rgb):
    return (rgb.astype(np.float64) @ [0.299, 0.587, 0.114]).round().astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# Writers


def write_png(path, pixels):
    """A PNG of `pixels` (H x W or H x W x C, uint8 or uint16), any of the 8 formats shmimage
    serves, written directly so 16-bit RGB(A) is possible."""
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    height, width, channels = pixels.shape
    depth = 16 if pixels.dtype == np.uint16 else 8
    color = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    rows = pixels.astype(">u2").tobytes() if depth == 16 else pixels.tobytes()
    stride = width * channels * depth // 8
    raw = b"".join(b"\0" + rows[y * stride : (y + 1) * stride] for y in range(height))

    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    png = b"\x89PNG\r\n\x1a\n"
    png += chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, color, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(raw, 9))
    png += chunk(b"IEND", b"")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(png)


def write_tiff(path, width, height, tags, strips, big_endian=False):
    """A baseline TIFF with `tags` ({tag: (type, [values])}) and the given strips of raw bytes.
    StripOffsets and StripByteCounts are filled in."""
    bo = ">" if big_endian else "<"
    data = b""
    offsets = []
    position = 8
    for strip in strips:
        offsets.append(position + len(data))
        data += strip
        if len(data) % 2:
            data += b"\0"
    tags = dict(tags)
    tags[256] = (4, [width])
    tags[257] = (4, [height])
    tags[273] = (4, offsets)
    tags[279] = (4, [len(s) for s in strips])
    size = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 8: 2}
    fmt = {1: "B", 2: "B", 3: "H", 4: "I", 8: "h"}
    ifd_at = position + len(data)
    entries = sorted(tags.items())
    extra_at = ifd_at + 2 + 12 * len(entries) + 4
    extra = b""
    ifd = struct.pack(bo + "H", len(entries))
    for tag, (kind, values) in entries:
        if kind == 5:
            payload = b"".join(struct.pack(bo + "II", n, d) for n, d in values)
        else:
            payload = struct.pack(bo + fmt[kind] * len(values), *values)
        count = len(values)
        if len(payload) <= 4:
            field = payload.ljust(4, b"\0")
        else:
            field = struct.pack(bo + "I", extra_at + len(extra))
            extra += payload + (b"\0" if len(payload) % 2 else b"")
        ifd += struct.pack(bo + "HHI", tag, kind, count) + field
    ifd += struct.pack(bo + "I", 0)
    header = (b"MM\0*" if big_endian else b"II*\0") + struct.pack(bo + "I", ifd_at)
    with open(path, "wb") as f:
        f.write(header + data + ifd + extra)


def pack_bits(samples, bits):
    """Rows of unsigned samples packed MSB-first, each row padded to a byte."""
    rows = []
    for row in samples.reshape(samples.shape[0], -1):
        accumulator, count, packed = 0, 0, bytearray()
        for value in row:
            accumulator = (accumulator << bits) | int(value)
            count += bits
            while count >= 8:
                count -= 8
                packed.append((accumulator >> count) & 0xFF)
        if count:
            packed.append((accumulator << (8 - count)) & 0xFF)
        rows.append(bytes(packed))
    return b"".join(rows)


def reverse_bits(data):
    table = bytes(int(f"{b:08b}"[::-1], 2) for b in range(256))
    return data.translate(table)


def base_tags(samples, bits, photometric, extra=None, planar=1, sample_format=None):
    tags = {
        258: (3, [bits] * samples),
        259: (3, [1]),
        262: (3, [photometric]),
        277: (3, [samples]),
        278: (4, [1 << 16]),
        284: (3, [planar]),
    }
    if extra is not None:
        tags[338] = (3, extra)
    if sample_format is not None:
        tags[339] = (3, [sample_format] * samples)
    return tags


def tiffcp(source, target, *options):
    run("tiffcp", *options, source, out(target))


# ---------------------------------------------------------------------------------------------
# Generated inputs


def generate_tiff():
    work = tempfile.mkdtemp()
    rgb = picture(45, 37)
    rgba = with_alpha(rgb)
    rgb16 = sixteen(rgb)
    rgba16 = sixteen(rgba)

    def plain(name, pixels, extra=None, planar=False):
        height, width, channels = pixels.shape
        bits = 16 if pixels.dtype == np.uint16 else 8
        tags = base_tags(channels, bits, 2, extra, planar=2 if planar else 1)
        typed = pixels.astype("<u2" if bits == 16 else "u1")
        if planar:
            strips = [np.ascontiguousarray(typed[:, :, c]).tobytes() for c in range(channels)]
        else:
            strips = [typed.tobytes()]
        write_tiff(os.path.join(work, name), width, height, tags, strips)
        return os.path.join(work, name)

    base_rgb8 = plain("rgb8.tif", rgb)
    base_rgba8 = plain("rgba8.tif", rgba, [2])
    base_rgb16 = plain("rgb16.tif", rgb16)
    base_rgba16 = plain("rgba16.tif", rgba16, [2])
    # tiffcp turns chunky samples into planes only at 8 bits, so the 16-bit ones start planar.
    planar_rgb16 = plain("planar-rgb16.tif", rgb16, planar=True)
    planar_rgba16 = plain("planar-rgba16.tif", rgba16, [2], planar=True)

    # Tiled, one plane per sample (PlanarConfiguration 2), 16x16 tiles so the right and bottom
    # tiles are partial.
    tiled = ["-p", "separate", "-t", "-w", "16", "-l", "16"]
    for source, name, pixels in [
        (base_rgb8, "tiled-planar-rgb8-raw.tif", rgb),
        (base_rgba8, "tiled-planar-rgba8-raw.tif", rgba),
        (planar_rgb16, "tiled-planar-rgb16-raw.tif", rgb16),
        (planar_rgba16, "tiled-planar-rgba16-raw.tif", rgba16),
    ]:
        tiffcp(source, f"tiff/{name}", *tiled, "-c", "none")
        SOURCE[f"tiff/{name}"] = pixels
        lzw = name.replace("-raw", "-lzw")
        tiffcp(source, f"tiff/{lzw}", *tiled, "-c", "lzw:2")
        SOURCE[f"tiff/{lzw}"] = pixels
    # Planar strips too, and chunky tiles, for contrast.
    tiffcp(planar_rgb16, "tiff/strips-planar-rgb16-deflate.tif", "-r", "5", "-c", "zip")
    SOURCE["tiff/strips-planar-rgb16-deflate.tif"] = rgb16
    tiffcp(base_rgba8, "tiff/tiled-chunky-rgba8-packbits.tif", "-t", "-w", "32", "-l", "16", "-c", "packbits")
    SOURCE["tiff/tiled-chunky-rgba8-packbits.tif"] = rgba

    # Premultiplied (associated) alpha, ExtraSamples = 1.
    height, width, _ = rgba.shape
    for bits, pixels in [(8, rgba), (16, rgba16)]:
        maximum = 255 if bits == 8 else 65535
        alpha = pixels[:, :, 3:4].astype(np.float64)
        premultiplied = np.dstack(
            [(pixels[:, :, :3] * alpha / maximum).round(), pixels[:, :, 3:4]]
        ).astype(pixels.dtype)
        name = f"tiff/premultiplied-rgba{bits}.tif"
        write_tiff(out(name), width, height, base_tags(4, bits, 2, [1]), [premultiplied.astype("<u2" if bits == 16 else "u1").tobytes()])

    # 32-bit unsigned integers without a SampleFormat tag (which then defaults to unsigned).
    rgb32 = rgb.astype(np.uint32) * 16843009  # 0xFF -> 0xFFFFFFFF
    rgb32 += (np.arange(rgb32.size, dtype=np.uint32).reshape(rgb32.shape) * 7919) % 65536
    rgb32 = np.minimum(rgb32, 0xFFFFFFFF)
    write_tiff(out("tiff/rgb32-uint-no-sampleformat.tif"), width - 8, height, base_tags(3, 32, 2), [rgb32[:, : width - 8].astype("<u4").tobytes()])
    gray32 = gray(rgb).astype(np.uint32) * 16843009
    write_tiff(out("tiff/gray32-uint-big-endian.tif"), width, height, base_tags(1, 32, 1, sample_format=1), [gray32.astype(">u4").tobytes()], big_endian=True)

    # Palette images (a 16-bit color map, as TIFF stores them), 4 and 8 bits per index.
    small = picture(37, 29)
    quantised = Image.fromarray(small).quantize(16, dither=Image.Dither.NONE)
    indices = np.asarray(quantised)
    palette = np.array(quantised.getpalette()[: 16 * 3]).reshape(16, 3)
    colormap = [int(v) * 257 for v in np.concatenate([palette[:, 0], palette[:, 1], palette[:, 2]])]
    for bits in (4, 8):
        entries = 1 << bits
        padded = colormap[:16] + [0] * (entries - 16)
        padded += colormap[16:32] + [0] * (entries - 16)
        padded += colormap[32:48] + [0] * (entries - 16)
        tags = base_tags(1, bits, 3)
        tags[320] = (3, padded)
        write_tiff(out(f"tiff/palette{bits}.tif"), 37, 29, tags, [pack_bits(indices, bits)])
        SOURCE[f"tiff/palette{bits}.tif"] = palette[indices].astype(np.uint8)

    # 2- and 4-bit gray, min-is-black and min-is-white, rows not a whole number of bytes.
    luma = gray(small)
    for bits, photometric, name in [(2, 1, "gray2-minisblack"), (4, 0, "gray4-miniswhite"), (4, 1, "gray4-lzw-predictor")]:
        levels = (1 << bits) - 1
        values = (luma.astype(np.float64) * levels / 255).round().astype(np.uint8)
        stored = levels - values if photometric == 0 else values
        write_tiff(out(f"tiff/{name}.tif"), 37, 29, base_tags(1, bits, photometric), [pack_bits(stored, bits)])
        SOURCE[f"tiff/{name}.tif"] = (values.astype(np.uint32) * 255 // levels).astype(np.uint8)
    # Rewrite the last one with LZW (no predictor: libtiff refuses one below 8 bits).
    os.replace(out("tiff/gray4-lzw-predictor.tif"), os.path.join(work, "g4.tif"))
    tiffcp(os.path.join(work, "g4.tif"), "tiff/gray4-lzw.tif", "-c", "lzw")
    SOURCE["tiff/gray4-lzw.tif"] = SOURCE.pop("tiff/gray4-lzw-predictor.tif")

    # 12-bit gray.
    values12 = (luma.astype(np.uint32) * 4095 // 255 + (np.arange(luma.size).reshape(luma.shape) % 16)).clip(0, 4095)
    write_tiff(out("tiff/gray12.tif"), 37, 29, base_tags(1, 12, 1), [pack_bits(values12, 12)])
    SOURCE["tiff/gray12.tif"] = ((values12 * 65535 + 2047) // 4095).astype(np.uint16)

    # FillOrder = 2: bits stored least significant first, uncompressed and PackBits.
    bilevel = (luma > 110).astype(np.uint8)
    tags = base_tags(1, 1, 1)
    tags[266] = (3, [2])
    write_tiff(out("tiff/bilevel-fillorder2.tif"), 37, 29, tags, [reverse_bits(pack_bits(bilevel, 1))])
    SOURCE["tiff/bilevel-fillorder2.tif"] = bilevel * 255
    write_tiff(os.path.join(work, "bilevel.tif"), 37, 29, base_tags(1, 1, 0), [pack_bits(1 - bilevel, 1)])
    tiffcp(os.path.join(work, "bilevel.tif"), "tiff/bilevel-fillorder2-packbits.tif", "-f", "lsb2msb", "-c", "packbits")
    SOURCE["tiff/bilevel-fillorder2-packbits.tif"] = bilevel * 255

    # CCITT fax compression: Group 3 (1-D), Group 3 with bits reversed, Group 4.
    big = gray(picture(100, 90)) > 110
    write_tiff(os.path.join(work, "fax.tif"), 100, 90, base_tags(1, 1, 0), [pack_bits((~big).astype(np.uint8), 1)])
    for name, options in [
        ("fax3.tif", ["-c", "g3"]),
        ("fax3-fillorder2.tif", ["-c", "g3", "-f", "lsb2msb"]),
        ("fax3-2d.tif", ["-c", "g3:2d"]),
        ("fax4.tif", ["-c", "g4"]),
    ]:
        tiffcp(os.path.join(work, "fax.tif"), f"tiff/{name}", *options)
        SOURCE[f"tiff/{name}"] = big.astype(np.uint8) * 255

    # JPEG-compressed (new style) YCbCr, in strips and in tiles.
    photo = picture(64, 48)
    write_tiff(os.path.join(work, "photo.tif"), 64, 48, base_tags(3, 8, 2), [photo.tobytes()])
    tiffcp(os.path.join(work, "photo.tif"), "tiff/jpeg-ycbcr-strips.tif", "-c", "jpeg:90", "-r", "16")
    tiffcp(os.path.join(work, "photo.tif"), "tiff/jpeg-ycbcr-tiles.tif", "-c", "jpeg:90", "-t", "-w", "32", "-l", "32")

    # Gray with an unspecified extra sample, one plane per sample.
    extra_plane = np.full_like(luma, 200)
    tags = base_tags(2, 8, 1, [0], planar=2)
    write_tiff(out("tiff/planar-gray-extra-sample.tif"), 37, 29, tags, [luma.tobytes(), extra_plane.tobytes()])
    SOURCE["tiff/planar-gray-extra-sample.tif"] = luma

    # BigTIFF.
    tiffcp(base_rgb8, "tiff/bigtiff-rgb8.tif", "-8")
    SOURCE["tiff/bigtiff-rgb8.tif"] = rgb
    tiffcp(base_rgba16, "tiff/bigtiff-tiled-rgba16.tif", "-8", "-t", "-w", "16", "-l", "16", "-c", "zip")
    SOURCE["tiff/bigtiff-tiled-rgba16.tif"] = rgba16
    shutil.rmtree(work)


def jpeg_of(pixels, *options):
    ppm = b"P6\n%d %d\n255\n" % (pixels.shape[1], pixels.shape[0]) + pixels.tobytes()
    return subprocess.run(["cjpeg", "-quality", "90", *options], input=ppm, capture_output=True, check=True).stdout


def scan_start(jpeg):
    """The offset just after the first SOS segment's header."""
    position = 2
    while True:
        marker = jpeg[position + 1]
        length = struct.unpack(">H", jpeg[position + 2 : position + 4])[0]
        if marker == 0xDA:
            return position + 2 + length
        position += 2 + length


def generate_jpeg():
    photo = picture(96, 80)
    for name, options in [("damaged-scan.jpg", []), ("damaged-scan-restarts.jpg", ["-restart", "1"])]:
        jpeg = bytearray(jpeg_of(photo, *options))
        start = scan_start(jpeg)
        # Overwrite 24 bytes a third of the way into the scan with one-bits (0xFF, stuffed with
        # 0x00 so it is no marker): no Huffman code is all ones, so the decoder meets a bad code.
        at = start + (len(jpeg) - start) // 3
        jpeg[at : at + 24] = b"\xff\x00" * 12
        with open(out(f"jpeg/{name}"), "wb") as f:
            f.write(jpeg)
    # Stray bytes between two header segments: libjpeg warns and decodes the picture.
    jpeg = jpeg_of(photo)
    second = 2 + 2 + struct.unpack(">H", jpeg[4:6])[0]
    with open(out("jpeg/junk-between-markers.jpg"), "wb") as f:
        f.write(jpeg[:second] + b"\x00junk\x00" + jpeg[second:])
    # Orientation only in XMP (no Exif block): the element form.
    xmp = (
        b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        b'<rdf:Description rdf:about="" xmlns:tiff="http://ns.adobe.com/tiff/1.0/">'
        b"<tiff:Orientation>6</tiff:Orientation></rdf:Description></rdf:RDF></x:xmpmeta>"
    )
    payload = b"http://ns.adobe.com/xap/1.0/\0" + xmp
    jpeg = jpeg_of(picture(64, 40))
    segment = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    with open(out("jpeg/xmp-orientation-6.jpg"), "wb") as f:
        f.write(jpeg[:2] + segment + jpeg[2:])


def generate_png():
    # Orientation only in XMP: the attribute form, in an iTXt chunk.
    xmp = (
        b'<?xpacket begin="" id="W5M0MpCehiHzreSzNTczkc9d"?><x:xmpmeta xmlns:x="adobe:ns:meta/">'
        b'<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description rdf:about="" '
        b'xmlns:tiff="http://ns.adobe.com/tiff/1.0/" tiff:Orientation="8"/></rdf:RDF></x:xmpmeta><?xpacket end="w"?>'
    )
    path = out("png/xmp-orientation-8.png")
    write_png(path, picture(50, 30))
    with open(path, "rb") as f:
        png = f.read()
    body = b"iTXt" + b"XML:com.adobe.xmp\0\0\0\0\0" + xmp
    chunk = struct.pack(">I", len(body) - 4) + body + struct.pack(">I", zlib.crc32(body))
    with open(path, "wb") as f:
        f.write(png[:33] + chunk + png[33:])


def generate_gif():
    # A GIF without any color table: Pillow writes one, then it is cut out.
    small = gray(picture(23, 17)) // 16 * 16
    buffer = io.BytesIO()
    Image.fromarray(small, "L").save(buffer, "GIF")
    gif = bytearray(buffer.getvalue())
    flags = gif[10]
    assert flags & 0x80, "Pillow wrote a global color table"
    table = 3 << ((flags & 7) + 1)
    gif[10] = flags & 0x70
    gif[11] = 0
    del gif[13 : 13 + table]
    with open(out("gif/no-color-table.gif"), "wb") as f:
        f.write(gif)


def generate_bmp():
    pass  # every BMP comes from bmpsuite


def generate_containers():
    rgb = picture(33, 21)
    rgba = with_alpha(rgb)
    luma = gray(rgb)
    Image.fromarray(rgba).save(out("qoi/rgba.qoi"))
    SOURCE["qoi/rgba.qoi"] = rgba
    Image.fromarray(rgb).save(out("qoi/rgb.qoi"))
    SOURCE["qoi/rgb.qoi"] = rgb
    # PNM: binary PBM, PGM (8 and 16 bits), PPM, plain PPM, and PAM with alpha.
    Image.fromarray(luma > 120).save(out("pnm/bilevel.pbm"))
    SOURCE["pnm/bilevel.pbm"] = (luma > 120).astype(np.uint8) * 255
    Image.fromarray(luma).save(out("pnm/gray8.pgm"))
    SOURCE["pnm/gray8.pgm"] = luma
    luma16 = sixteen(luma)
    with open(out("pnm/gray16.pgm"), "wb") as f:
        f.write(b"P5\n33 21\n65535\n" + luma16.astype(">u2").tobytes())
    SOURCE["pnm/gray16.pgm"] = luma16
    Image.fromarray(rgb).save(out("pnm/rgb8.ppm"))
    SOURCE["pnm/rgb8.ppm"] = rgb
    run("convert", out("pnm/rgb8.ppm"), "-compress", "none", out("pnm/plain.ppm"))
    SOURCE["pnm/plain.ppm"] = rgb
    with open(out("pnm/rgba.pam"), "wb") as f:
        f.write(b"P7\nWIDTH 33\nHEIGHT 21\nDEPTH 4\nMAXVAL 255\nTUPLTYPE RGB_ALPHA\nENDHDR\n" + rgba.tobytes())
    SOURCE["pnm/rgba.pam"] = rgba
    # TGA: RGB run-length encoded, RGBA bottom-up, gray, color-mapped.
    Image.fromarray(rgb).save(out("tga/rgb-rle.tga"), compression="tga_rle")
    SOURCE["tga/rgb-rle.tga"] = rgb
    Image.fromarray(rgba).save(out("tga/rgba.tga"))
    SOURCE["tga/rgba.tga"] = rgba
    Image.fromarray(luma).save(out("tga/gray.tga"))
    SOURCE["tga/gray.tga"] = luma
    quantised = Image.fromarray(rgb).quantize(32, dither=Image.Dither.NONE)
    quantised.save(out("tga/color-mapped.tga"))
    SOURCE["tga/color-mapped.tga"] = np.asarray(quantised.convert("RGB"))
    # ICO with two sizes (the larger is served), PNG-compressed and BMP entries.
    Image.fromarray(rgba).resize((32, 32)).save(out("ico/two-sizes.ico"), sizes=[(16, 16), (32, 32)])
    # Radiance HDR, from ImageMagick.
    run("convert", out("pnm/rgb8.ppm"), out("hdr/rgb.hdr"))
    # OpenEXR: half-float RGBA and float RGB, uncompressed and ZIP.
    import OpenEXR

    floats = rgba.astype(np.float32) / 255
    floats[0, :4, :3] = 2.5  # over-bright: clamped to white
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    channels = {"RGBA": floats.astype(np.float16)}
    with OpenEXR.File(header, channels) as exr:
        exr.write(out("exr/rgba-half-zip.exr"))
    header = {"compression": OpenEXR.NO_COMPRESSION, "type": OpenEXR.scanlineimage}
    channels = {"RGB": np.ascontiguousarray(floats[:, :, :3])}
    with OpenEXR.File(header, channels) as exr:
        exr.write(out("exr/rgb-float.exr"))
    # farbfeld: RGBA, 16 bits, big-endian.
    rgba16 = sixteen(rgba)
    with open(out("farbfeld/rgba16.ff"), "wb") as f:
        f.write(b"farbfeld" + struct.pack(">II", 33, 21) + rgba16.astype(">u2").tobytes())
    SOURCE["farbfeld/rgba16.ff"] = rgba16
    # DDS with DXT1 and DXT5 block compression, from ImageMagick.
    square = with_alpha(picture(32, 32))
    Image.fromarray(square).save(os.path.join(tempfile.gettempdir(), "square.png"))
    for kind in ("dxt1", "dxt5"):
        run("convert", os.path.join(tempfile.gettempdir(), "square.png"), "-define", f"dds:compression={kind}", "-define", "dds:mipmaps=0", out(f"dds/{kind}.dds"))
    # HEIC and AVIF: recognised, named and refused.
    run("convert", out("pnm/rgb8.ppm"), out("heic/small.heic"))
    Image.fromarray(rgb).save(out("heic/small.avif"))


# ---------------------------------------------------------------------------------------------
# References


def shape_to(pixels, color):
    """`pixels` (H x W x 4, float 0..1) in the pixel format `color` names ("RGB 16-bit", ...)."""
    model, depth = color.rsplit(" ", 1)
    channels = {"Gray": [0], "Gray+Alpha": [0, 3], "RGB": [0, 1, 2], "RGBA": [0, 1, 2, 3]}[model]
    maximum = 65535 if depth == "16-bit" else 255
    scaled = (pixels[:, :, channels] * maximum).round()
    return scaled.astype(np.uint16 if maximum == 65535 else np.uint8)


def as_unit_rgba(pixels):
    """Integer pixels (H x W or H x W x C) as float RGBA in 0..1."""
    maximum = 65535.0 if pixels.dtype == np.uint16 else 255.0
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    pixels = pixels.astype(np.float64) / maximum
    channels = pixels.shape[2]
    if channels == 1:
        return np.dstack([pixels] * 3 + [np.ones_like(pixels)])
    if channels == 2:
        return np.dstack([pixels[:, :, :1]] * 3 + [pixels[:, :, 1:]])
    if channels == 3:
        return np.dstack([pixels, np.ones_like(pixels[:, :, :1])])
    return pixels


def pillow_reference(path):
    image = ImageOps.exif_transpose(Image.open(path))
    if image.mode in ("I;16", "I;16B", "I;16L"):
        return as_unit_rgba(np.asarray(image).astype(np.uint16))
    if image.mode == "RGBa":
        image = image.convert("RGBA")
    return np.asarray(image.convert("RGBA")).astype(np.float64) / 255


def magick_reference(path):
    size = subprocess.run(["identify", "-format", "%w %h\n", path], capture_output=True, check=True, text=True)
    width, height = map(int, size.stdout.split("\n")[0].split())
    # ImageMagick reads Radiance HDR as linear RGB and would convert it to sRGB on the way out;
    # the stored samples are wanted (as its own PNG writer keeps them, marked gAMA 1.0).
    keep = ["-set", "colorspace", "sRGB"] if path.endswith(".hdr") else []
    raw = subprocess.run(["convert", path + "[0]", "-auto-orient", *keep, "-depth", "16", "rgba:-"], capture_output=True, check=True).stdout
    pixels = np.frombuffer(raw, dtype="<u2").reshape(-1, 4)
    rows = len(pixels) // width
    return pixels.reshape(rows, width, 4).astype(np.float64) / 65535


def openexr_reference(path):
    import OpenEXR

    with OpenEXR.File(path) as exr:
        channels = exr.channels()
        name = "RGBA" if "RGBA" in channels else "RGB"
        pixels = np.asarray(channels[name].pixels, dtype=np.float64)
    if pixels.shape[2] == 3:
        pixels = np.dstack([pixels, np.ones_like(pixels[:, :, :1])])
    return np.clip(np.nan_to_num(pixels), 0, 1)


def references():
    with open(CASES) as f:
        rows = [line.rstrip("\n").split("\t") for line in f if line.strip() and not line.startswith("#")]
    wanted = set()
    for row in rows:
        file, expect, _check, reference, _class = row
        if not expect.startswith("201"):
            continue
        color = expect.split(" ", 1)[1]
        path = os.path.join(FILES, file)
        if reference == "source":
            pixels = as_unit_rgba(SOURCE[file])
        elif reference == "pillow":
            pixels = pillow_reference(path)
        elif reference == "magick":
            pixels = magick_reference(path)
        elif reference == "openexr":
            pixels = openexr_reference(path)
        elif reference.startswith("file:"):
            pixels = pillow_reference(os.path.join(HERE, reference[5:]))
        else:
            sys.exit(f"{file}: unknown reference {reference}")
        target = os.path.join(EXPECTED, file + ".png")
        wanted.add(target)
        write_png(target, shape_to(pixels, color))
    for root, _dirs, names in os.walk(EXPECTED):
        for name in names:
            if os.path.join(root, name) not in wanted:
                os.remove(os.path.join(root, name))


def main():
    generate_tiff()
    generate_jpeg()
    generate_png()
    generate_gif()
    generate_bmp()
    generate_containers()
    references()


if __name__ == "__main__":
    main()
