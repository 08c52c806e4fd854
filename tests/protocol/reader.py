#!/usr/bin/env python3
"""An independent reader of shmimage segments, written from docs/PROTOCOL.md alone.

Standard library only: the objects are mapped read-only with `mmap`, fields are decoded with
`struct`, PNGs are decoded with `zlib`, and `ctypes` is used only to wait on the futex word.
It never writes to a segment and takes no lock.

Commands (each prints JSON lines on stdout; errors go to stderr with exit status 1):

  reader.py read --segment NAME [--count N] [--out FILE] [--pause-after-copy] [--max-pixels N]
      Reads the current image lock-free, N times, one JSON line per read. --out writes the last
      image's pixels, raw, to FILE. --pause-after-copy stops after the first copy of each read,
      before the race check, prints {"paused": ...} and waits for a line on stdin (for tests
      that publish an image at exactly that moment). Images of more than --max-pixels pixels
      (default 100 000 000) are refused before anything is copied.
  reader.py compare --segment NAME --png-url URL [--out FILE] [--max-pixels N]
      Reads the image and compares it with the PNG at URL (a server's /image.png).
  reader.py wait --segment NAME --since SEQ [--timeout SECONDS]
      Prints {"waiting": SEQ}, then sleeps on the futex until the segment holds an image other
      than SEQ; fails if the segment is removed meanwhile.
  reader.py attached --segment NAME
      Lists the attached processes the registry names, as {"attached": [{"pid", "label"}]}.
"""

import argparse
import ctypes
import ctypes.util
import fcntl
import json
import mmap
import os
import struct
import sys
import time
import urllib.request
import zlib

# --- Constants (PROTOCOL.md, "Constants") --------------------------------------------------

CONTROL_MAGIC = 0x4547414D494D4853
DATA_MAGIC = 0x41544144494D4853
LAYOUT_VERSION = 3
READY = 0x52454459
DATA_OFFSET = 4096
LABEL_MAX = 48
MAX_SLOT_CAPACITY = 1 << 40
ATTACHMENT_ENTRIES = 64
REGISTRY_BYTE = 64
PAGE = 4096

# "Pixel words": pixels are copied in aligned words of this many bytes.
PIXEL_WORD = 8

# Control header offsets ("The control object").
OFF_MAGIC = 0
OFF_VERSION = 8
OFF_HEADER_SIZE = 12
OFF_READY = 16
OFF_NOTIFY = 20
OFF_STATE = 24
OFF_CREATED_AT = 40
OFF_SLOTS = 48
SLOT_SIZE = 112
LOCK_OFFSET = 4432

# Slot record offsets, relative to the record ("Slot record").
SLOT_FIELDS = struct.Struct("=IIIIQQQQII")  # generation .. writer_pid, reserved
SLOT_LABEL = 56

# Label ("Label"): len u32, reserved u32, 48 bytes of UTF-8.
LABEL_LEN = struct.Struct("=I")
LABEL_BYTES = 8

# The registry ("Attachment record"): entries of 64 bytes from offset 272, each a pid (u32),
# 4 reserved bytes, then a label.
OFF_ATTACHMENTS = 272
ATTACHMENT_SIZE = 64
ATTACHMENT_LABEL = 8

# Data header ("Data objects"): magic u64, generation u32, reserved u32, capacity u64.
DATA_HEADER = struct.Struct("=QIIQ")

# Pixel formats: code -> (name, channels, bits per sample).
PIXEL_FORMATS = {
    1: ("Gray 8-bit", 1, 8),
    2: ("Gray+Alpha 8-bit", 2, 8),
    3: ("RGB 8-bit", 3, 8),
    4: ("RGBA 8-bit", 4, 8),
    5: ("Gray 16-bit", 1, 16),
    6: ("Gray+Alpha 16-bit", 2, 16),
    7: ("RGB 16-bit", 3, 16),
    8: ("RGBA 16-bit", 4, 16),
}

U64 = struct.Struct("=Q")
U32 = struct.Struct("=I")

# Lock-free attempts before giving up: a reader must not take the writers' lock.
MAX_ATTEMPTS = 10_000
# The most pixels this reader copies unless told otherwise (shmimage's own default).
DEFAULT_MAX_PIXELS = 100_000_000
# The longest single futex wait, so that a removed segment is noticed ("Waiting for a change").
WAIT_SLICE = 1.0

# "Who is attached": struct flock for F_OFD_GETLK (Linux: l_type, l_whence, l_start, l_len,
# l_pid, padded to 32 bytes on x86-64 and aarch64).
FLOCK = struct.Struct("@hhqqi4x")
F_OFD_GETLK = getattr(fcntl, "F_OFD_GETLK", 36)


class SegmentError(Exception):
    """The segment cannot be read; the message says why."""


class Raced(Exception):
    """A writer published during an attempt: try again."""


def load_u64(buffer, offset):
    # CPython has no atomic loads: slicing an mmap copies the 8 aligned bytes with memcpy,
    # which on x86-64 is one load in practice. A torn value would differ from the second load
    # of the state word and be caught by the race check.
    return U64.unpack(buffer[offset:offset + 8])[0]


def load_u32(buffer, offset):
    return U32.unpack(buffer[offset:offset + 4])[0]


def covered_length(byte_len):
    """`byte_len` rounded up to whole pixel words ("Pixel words")."""
    return -(-byte_len // PIXEL_WORD) * PIXEL_WORD


def decode_label(buffer, offset):
    length = min(LABEL_LEN.unpack(buffer[offset:offset + 4])[0], LABEL_MAX)
    start = offset + LABEL_BYTES
    return buffer[start:start + length].decode("utf-8", errors="replace")


class DataObject:
    """A read-only mapping of one data object."""

    def __init__(self, name, generation):
        self.path = "/dev/shm/shmimage.%s.%08x" % (name, generation)
        self.generation = generation
        self.fd = os.open(self.path, os.O_RDONLY)  # FileNotFoundError if it is gone
        try:
            self.length = os.fstat(self.fd).st_size
            if self.length < DATA_OFFSET:
                raise SegmentError("data object %s is %d bytes, too short" % (self.path, self.length))
            self.map = mmap.mmap(self.fd, self.length, mmap.MAP_SHARED, mmap.PROT_READ)
        except BaseException:
            os.close(self.fd)
            raise

    def close(self):
        self.map.close()
        os.close(self.fd)


class Segment:
    """A read-only view of segment NAME: no lock is taken, nothing is written."""

    def __init__(self, name):
        self.name = name
        self.path = "/dev/shm/shmimage." + name
        try:
            self.fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            raise SegmentError(
                "no segment %r: %s does not exist (no process is attached to it)" % (name, self.path)
            )
        status = os.fstat(self.fd)
        self.identity = (status.st_dev, status.st_ino)
        self.length = status.st_size
        if self.length < 24:
            raise SegmentError("control object %s is %d bytes, too short" % (self.path, self.length))
        self.control = mmap.mmap(self.fd, self.length, mmap.MAP_SHARED, mmap.PROT_READ)
        self.data = {}  # generation -> DataObject
        self.created_at_ns = None
        self.check_control()
        self.created_at_ns = load_u64(self.control, OFF_CREATED_AT)

    def close(self):
        for data in self.data.values():
            data.close()
        self.control.close()
        os.close(self.fd)

    def check_control(self):
        """PROTOCOL.md, "Checking the control object"."""
        c = self.control
        magic = load_u64(c, OFF_MAGIC)
        if magic != CONTROL_MAGIC:
            raise SegmentError("magic is %#018x, not a shmimage control object" % magic)
        version = load_u32(c, OFF_VERSION)
        if version != LAYOUT_VERSION:
            raise SegmentError(
                "unsupported layout version %d: this reader reads version %d" % (version, LAYOUT_VERSION)
            )
        header_size = load_u32(c, OFF_HEADER_SIZE)
        if header_size < LOCK_OFFSET + 1:
            raise SegmentError("header_size %d is too small" % header_size)
        needed = -(-header_size // PAGE) * PAGE
        if self.length < needed:
            raise SegmentError("control object is %d bytes, %d needed" % (self.length, needed))
        if load_u32(c, OFF_READY) != READY:
            if self.removed():
                raise SegmentError("the segment was removed: the last process attached to it "
                                   "detached")
            raise SegmentError("the segment is not ready: it is being initialised or repaired "
                               "(try again)")
        created_at_ns = load_u64(c, OFF_CREATED_AT)
        if self.created_at_ns is not None and created_at_ns != self.created_at_ns:
            raise SegmentError("the segment was made afresh since this reader opened it")

    def removed(self):
        """True if the name no longer names the control object this reader has open."""
        try:
            status = os.stat(self.path)
        except FileNotFoundError:
            return True
        return (status.st_dev, status.st_ino) != self.identity

    def state(self):
        return load_u64(self.control, OFF_STATE)

    def data_object(self, generation, capacity):
        """Step 4 of "Reading the image": the mapped, checked data object of `generation`."""
        data = self.data.get(generation)
        if data is None:
            # Unmap the generations no slot names before mapping another one.
            self.forget_stale_mappings()
            data = DataObject(self.name, generation)
            self.data[generation] = data
        # Re-check the length before every copy: another process could have truncated it.
        length = os.fstat(data.fd).st_size
        if length < DATA_OFFSET + capacity or data.length < DATA_OFFSET + capacity:
            raise SegmentError(
                "data object %s is %d bytes, %d needed" % (data.path, length, DATA_OFFSET + capacity)
            )
        magic, header_generation, _reserved, header_capacity = DATA_HEADER.unpack(
            data.map[0:DATA_HEADER.size]
        )
        if magic != DATA_MAGIC or header_generation != generation or header_capacity != capacity:
            raise SegmentError("data object %s does not match its slot record" % data.path)
        return data

    def forget_stale_mappings(self):
        live = {load_u32(self.control, OFF_SLOTS + SLOT_SIZE * i) for i in (0, 1)}
        for generation in list(self.data):
            if generation not in live:
                self.data.pop(generation).close()

    def attempt(self, max_pixels, pause=None):
        """One lock-free attempt ("Reading the image"): (info, pixels), None, or Raced."""
        s1 = self.state()  # step 1
        seq, slot = s1 >> 1, s1 & 1
        if seq == 0:
            return None
        try:
            base = OFF_SLOTS + SLOT_SIZE * slot  # step 2
            (generation, code, width, height, capacity, byte_len, slot_seq, written_at_ns,
             writer_pid, _reserved) = SLOT_FIELDS.unpack(self.control[base:base + SLOT_FIELDS.size])
            writer_label = decode_label(self.control, base + SLOT_LABEL)
            # Step 3.
            if slot_seq != seq:
                raise SegmentError("the state publishes image %d, the slot holds %d" % (seq, slot_seq))
            if generation == 0:
                raise SegmentError("the published slot has no data object")
            if code not in PIXEL_FORMATS:
                raise SegmentError("unknown pixel format code %d" % code)
            format_name, channels, bits = PIXEL_FORMATS[code]
            if width == 0 or height == 0:
                raise SegmentError("empty image %dx%d" % (width, height))
            expected = width * height * channels * bits // 8
            if expected >= 1 << 64:
                raise SegmentError("dimensions %dx%d overflow" % (width, height))
            if byte_len != expected:
                raise SegmentError("%d bytes claimed, %dx%d needs %d" % (byte_len, width, height, expected))
            covered = covered_length(byte_len)
            if not covered <= capacity <= MAX_SLOT_CAPACITY:
                raise SegmentError("%d bytes of pixels take %d bytes of whole words, which do not "
                                   "fit a slot of %d" % (byte_len, covered, capacity))
            if width * height > max_pixels:
                raise SegmentError("the image is %dx%d, %d pixels, more than this reader's limit "
                                   "of %d (--max-pixels)" % (width, height, width * height,
                                                            max_pixels))
            data = self.data_object(generation, capacity)  # step 4
        except (SegmentError, FileNotFoundError) as error:
            # Step 6 asks for an acquire fence first; see the comment at the copy's re-check.
            if self.state() != s1:
                raise Raced()
            if isinstance(error, FileNotFoundError):
                raise SegmentError("data object of generation %d is missing" % generation)
            raise
        # Step 5: the copy covers whole pixel words, and the image is its first byte_len bytes.
        # CPython copies a slice of an mmap with memcpy; it has no atomic loads, so this reader
        # is one of the document's "languages without such a model" and relies on the race
        # check. Python raises MemoryError when it cannot allocate: reported, never a crash.
        try:
            words = data.map[DATA_OFFSET:DATA_OFFSET + covered]
        except MemoryError:
            raise SegmentError("cannot allocate %d bytes to copy the image" % covered)
        pixels = words[:byte_len] if covered != byte_len else words
        if pause is not None:
            pause(seq)
        # Step 6: CPython offers no fence. On x86-64, which keeps loads in program order, this
        # second load after the copy is what the document's acquire fence asks for.
        s2 = self.state()
        if s2 != s1:  # step 7
            raise Raced()
        info = {
            "seq": seq,
            "width": width,
            "height": height,
            "format": format_name,
            "bytes": byte_len,
            "written_at_ns": written_at_ns,
            "writer_pid": writer_pid,
            "writer_label": writer_label,
        }
        return info, pixels

    def read(self, max_pixels=DEFAULT_MAX_PIXELS, pause=None):
        """The current image as (info, pixels), or None; retries lost races."""
        self.check_control()  # before every read: the segment may be going away
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                result = self.attempt(max_pixels, pause if attempt == 1 else None)
            except Raced:
                continue
            except SegmentError:
                # "Check the control object again": a segment being removed is not corrupt.
                self.check_control()
                raise
            self.forget_stale_mappings()
            if result is None:
                return None
            info, pixels = result
            info["attempts"] = attempt
            return info, pixels
        raise SegmentError("writers published faster than this reader could copy, %d times" % MAX_ATTEMPTS)

    def wait(self, since, timeout, started=None):
        """PROTOCOL.md, "Waiting for a change": the seq once it is not `since`, or None.

        Each futex wait lasts at most WAIT_SLICE, and the control object is checked between
        them: nobody wakes waiters when the last attached process removes the segment."""
        futex = Futex(self.path, self.length)
        try:
            deadline = time.monotonic() + timeout
            while True:
                self.check_control()
                ticket = futex.load()
                seq = self.state() >> 1
                if seq != since:
                    return seq
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                if started is not None:
                    started()
                    started = None
                futex.wait(ticket, min(left, WAIT_SLICE))
        finally:
            futex.close()

    def attached(self):
        """PROTOCOL.md, "Who is attached": the entries whose byte is locked shared."""
        listed = []
        for i in range(ATTACHMENT_ENTRIES):
            query = FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, REGISTRY_BYTE + i, 1, 0)
            l_type = FLOCK.unpack(fcntl.fcntl(self.fd, F_OFD_GETLK, query))[0]
            if l_type != fcntl.F_RDLCK:
                continue  # free, or being filled in or cleared: its fields may be a dead one's
            base = OFF_ATTACHMENTS + ATTACHMENT_SIZE * i
            listed.append({
                "pid": load_u32(self.control, base),
                "label": decode_label(self.control, base + ATTACHMENT_LABEL),
            })
        return listed


class Futex:
    """The `notify` word, waited on with futex(2) through ctypes.

    Python's mmap objects do not give out the address of a read-only mapping, so the control
    object is mapped a second time, read-only, with libc's mmap.
    """

    SYS_FUTEX = {"x86_64": 202, "aarch64": 98}
    FUTEX_WAIT = 0

    def __init__(self, path, length):
        machine = os.uname().machine
        if machine not in self.SYS_FUTEX:
            raise SegmentError("no futex system call number known for %s" % machine)
        self.libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        self.libc.mmap.restype = ctypes.c_void_p
        self.libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                                   ctypes.c_int, ctypes.c_long]
        self.libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        self.libc.syscall.restype = ctypes.c_long
        self.fd = os.open(path, os.O_RDONLY)
        self.length = length
        address = self.libc.mmap(None, length, mmap.PROT_READ, mmap.MAP_SHARED, self.fd, 0)
        if address in (None, ctypes.c_void_p(-1).value):
            os.close(self.fd)
            raise SegmentError("mmap failed: %s" % os.strerror(ctypes.get_errno()))
        self.address = address
        self.number = self.SYS_FUTEX[machine]

    def load(self):
        return ctypes.c_uint32.from_address(self.address + OFF_NOTIFY).value

    def wait(self, expected, seconds):
        class Timespec(ctypes.Structure):
            _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]

        whole = int(seconds)
        timeout = Timespec(whole, int((seconds - whole) * 1e9))
        # Returns on a wake-up, a timeout (ETIMEDOUT), a changed word (EAGAIN) or a signal.
        self.libc.syscall(ctypes.c_long(self.number), ctypes.c_void_p(self.address + OFF_NOTIFY),
                          ctypes.c_int(self.FUTEX_WAIT), ctypes.c_uint32(expected),
                          ctypes.byref(timeout), None, ctypes.c_uint32(0))

    def close(self):
        self.libc.munmap(ctypes.c_void_p(self.address), self.length)
        os.close(self.fd)


# --- PNG, for comparing with a server's /image.png ----------------------------------------

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_COLOR_TYPES = {0: ("Gray", 1), 2: ("RGB", 3), 4: ("Gray+Alpha", 2), 6: ("RGBA", 4)}


def decode_png(png):
    """(width, height, format name, pixels) of a non-interlaced 8- or 16-bit PNG, with 16-bit
    samples turned into this machine's byte order, as the segment stores them."""
    if not png.startswith(PNG_SIGNATURE):
        raise ValueError("not a PNG")
    position, header, idat = len(PNG_SIGNATURE), None, []
    while position < len(png):
        length, kind = struct.unpack(">I4s", png[position:position + 8])
        body = png[position + 8:position + 8 + length]
        crc = struct.unpack(">I", png[position + 8 + length:position + 12 + length])[0]
        if zlib.crc32(kind + body) != crc:
            raise ValueError("bad CRC in chunk %r" % kind)
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
        position += 12 + length
    width, height, depth, color_type, _compression, _filter, interlace = header
    if color_type not in PNG_COLOR_TYPES or depth not in (8, 16) or interlace != 0:
        raise ValueError("unsupported PNG: color type %d, depth %d, interlace %d"
                         % (color_type, depth, interlace))
    model, channels = PNG_COLOR_TYPES[color_type]
    bpp = channels * depth // 8
    stride = width * bpp
    raw = zlib.decompress(b"".join(idat))
    rows, previous = [], bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind, row = raw[start], bytearray(raw[start + 1:start + 1 + stride])
        unfilter(kind, row, previous, bpp)
        rows.append(bytes(row))
        previous = row
    pixels = b"".join(rows)
    if depth == 16 and sys.byteorder == "little":
        swapped = bytearray(pixels)
        swapped[0::2], swapped[1::2] = pixels[1::2], pixels[0::2]
        pixels = bytes(swapped)
    return width, height, "%s %d-bit" % (model, depth), pixels


def unfilter(kind, row, previous, bpp):
    if kind == 0:
        return
    for i in range(len(row)):
        left = row[i - bpp] if i >= bpp else 0
        up = previous[i]
        if kind == 1:
            row[i] = (row[i] + left) & 0xFF
        elif kind == 2:
            row[i] = (row[i] + up) & 0xFF
        elif kind == 3:
            row[i] = (row[i] + ((left + up) >> 1)) & 0xFF
        elif kind == 4:
            up_left = previous[i - bpp] if i >= bpp else 0
            p = left + up - up_left
            pa, pb, pc = abs(p - left), abs(p - up), abs(p - up_left)
            predictor = left if pa <= pb and pa <= pc else (up if pb <= pc else up_left)
            row[i] = (row[i] + predictor) & 0xFF
        else:
            raise ValueError("unknown PNG filter %d" % kind)


# --- Commands -------------------------------------------------------------------------------

def emit(value):
    sys.stdout.write(json.dumps(value, sort_keys=True) + "\n")
    sys.stdout.flush()


def with_digest(info, pixels):
    info = dict(info)
    info["crc32"] = zlib.crc32(pixels)
    return info


def command_read(segment, args):
    def pause(seq):
        emit({"paused": True, "seq": seq})
        sys.stdin.readline()

    result = None
    for _ in range(args.count):
        result = segment.read(args.max_pixels, pause if args.pause_after_copy else None)
        if result is None:
            emit({"seq": 0})
            continue
        info, pixels = result
        emit(with_digest(info, pixels))
    if args.out and result is not None:
        with open(args.out, "wb") as out:
            out.write(result[1])


def command_compare(segment, args):
    result = segment.read(args.max_pixels)
    if result is None:
        raise SegmentError("no image in segment %r yet" % segment.name)
    info, pixels = result
    with urllib.request.urlopen(args.png_url, timeout=30) as response:
        png = response.read()
    width, height, format_name, png_pixels = decode_png(png)
    same = (width, height, format_name, png_pixels) == (info["width"], info["height"],
                                                        info["format"], pixels)
    info = with_digest(info, pixels)
    info["same_as_png"] = same
    emit(info)
    if args.out:
        with open(args.out, "wb") as out:
            out.write(pixels)
    if not same:
        raise SegmentError("the segment's %dx%d %s differs from the PNG's %dx%d %s"
                           % (info["width"], info["height"], info["format"],
                              width, height, format_name))


def command_wait(segment, args):
    seq = segment.wait(args.since, args.timeout, started=lambda: emit({"waiting": args.since}))
    if seq is None:
        raise SegmentError("no image other than %d within %g seconds" % (args.since, args.timeout))
    emit({"seq": seq})


def command_attached(segment, _args):
    emit({"attached": segment.attached()})


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    read = commands.add_parser("read")
    read.add_argument("--count", type=int, default=1)
    read.add_argument("--out")
    read.add_argument("--pause-after-copy", action="store_true")
    compare = commands.add_parser("compare")
    compare.add_argument("--png-url", required=True)
    compare.add_argument("--out")
    wait = commands.add_parser("wait")
    wait.add_argument("--since", type=int, required=True)
    wait.add_argument("--timeout", type=float, default=30.0)
    attached = commands.add_parser("attached")
    for command in (read, compare):
        command.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS)
    for command in (read, compare, wait, attached):
        command.add_argument("--segment", required=True)
    args = parser.parse_args()
    try:
        segment = Segment(args.segment)
        try:
            handlers = {"read": command_read, "compare": command_compare, "wait": command_wait,
                        "attached": command_attached}
            handlers[args.command](segment, args)
        finally:
            segment.close()
    except SegmentError as error:
        sys.stderr.write("reader.py: segment %r: %s\n" % (args.segment, error))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
