#!/usr/bin/python3
"""Qt's "IPC: Shared Memory" example's data path, headless and timed, for the end-to-end bench.

For each image file given, this does what the example's two dialogs do with it, with Qt itself
(PyQt6 over the system's Qt 6), and what the reader needs to hand a PNG on:

1. writer, `loadFromFile()`: `QImage::load(file)`, `QDataStream << image` into a `QBuffer`
   (a PNG at zlib's default level behind a 4-byte marker), `QSharedMemory::create()`,
   `lock()`, `memcpy`, `unlock()`;
2. reader, `loadFromMemory()`: `attach()`, `lock()`, `QDataStream >> image` from a `QBuffer`
   over the segment, `unlock()`, `detach()`; then `QImage::save()` as PNG (default quality,
   that is zlib's default level) into memory, the PNG a web server would send.

Prints one JSON object per file: median milliseconds of each step over the repetitions, the
size of the PNG of step 2 and the image's size. `examples/e2e_bench.rs` runs it; it needs
`apt-get install python3-pyqt6` and runs with Debian's `/usr/bin/python3`.

    /usr/bin/python3 examples/qt_path.py --reps 3 photo.png photo.jpg
"""

import atexit
import ctypes
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
if "XDG_RUNTIME_DIR" not in os.environ:
    RUNTIME_DIR = tempfile.mkdtemp(prefix="qt-runtime-")
    os.environ["XDG_RUNTIME_DIR"] = RUNTIME_DIR
    atexit.register(shutil.rmtree, RUNTIME_DIR, True)

from PyQt6.QtCore import (  # noqa: E402
    PYQT_VERSION_STR,
    QT_VERSION_STR,
    QBuffer,
    QDataStream,
    QIODevice,
    QSharedMemory,
)
from PyQt6.QtGui import QGuiApplication, QImage  # noqa: E402


def ms(seconds):
    return seconds * 1000.0


def share_once(path, key):
    """One pass of the example's data path; the time of each step in ms, and the saved PNG."""
    times = {}
    start = time.perf_counter()

    # loadFromFile()
    image = QImage()
    if not image.load(path):
        raise SystemExit(f"Qt cannot load {path}")
    loaded = time.perf_counter()
    buffer = QBuffer()
    buffer.open(QIODevice.OpenModeFlag.ReadWrite)
    out = QDataStream(buffer)
    out << image
    size = buffer.size()
    serialized = time.perf_counter()
    writer = QSharedMemory()
    writer.setKey(key)
    if not writer.create(size):
        raise SystemExit(f"QSharedMemory::create: {writer.errorString()}")
    writer.lock()
    data = buffer.data().data()
    ctypes.memmove(int(writer.data()), data, min(writer.size(), size))
    writer.unlock()
    copied = time.perf_counter()

    # loadFromMemory()
    reader = QSharedMemory()
    reader.setKey(key)
    if not reader.attach():
        raise SystemExit(f"QSharedMemory::attach: {reader.errorString()}")
    reader.lock()
    view = reader.constData()
    view.setsize(reader.size())
    incoming = QBuffer()
    incoming.setData(bytes(view))
    incoming.open(QIODevice.OpenModeFlag.ReadOnly)
    stream = QDataStream(incoming)
    shared = QImage()
    stream >> shared
    reader.unlock()
    reader.detach()
    if shared.isNull():
        raise SystemExit("the reader got a null image")
    read = time.perf_counter()
    png = QBuffer()
    png.open(QIODevice.OpenModeFlag.ReadWrite)
    if not shared.save(png, "PNG"):
        raise SystemExit("QImage::save as PNG failed")
    saved = time.perf_counter()
    writer.detach()

    times["load"] = ms(loaded - start)
    times["serialize_png"] = ms(serialized - loaded)
    times["copy"] = ms(copied - serialized)
    times["read_decode"] = ms(read - copied)
    times["save_png"] = ms(saved - read)
    times["total"] = ms(saved - start)
    return times, png.size(), (shared.width(), shared.height())


def main(argv):
    reps = 1
    files = []
    args = iter(argv)
    for arg in args:
        if arg == "--reps":
            reps = int(next(args))
        else:
            files.append(arg)
    app = QGuiApplication([])  # noqa: F841 (the image plugins want an application)
    for index, path in enumerate(files):
        runs = []
        for rep in range(reps):
            key = f"shmimage-qt-path-{os.getpid()}-{index}-{rep}"
            runs.append(share_once(path, key))
        steps = {
            name: statistics.median(run[0][name] for run in runs) for name in runs[0][0]
        }
        print(
            json.dumps(
                {
                    "file": path,
                    "qt": QT_VERSION_STR,
                    "pyqt": PYQT_VERSION_STR,
                    "repetitions": reps,
                    "ms": steps,
                    "png_bytes": runs[-1][1],
                    "width": runs[-1][2][0],
                    "height": runs[-1][2][1],
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main(sys.argv[1:])
