"""Pictures of memory: the physical memory map, memory by class, growth.

* :func:`memory_map`: PFN space as an image, PFN 0 at the top left and
  growing left to right, then top to bottom, one pixel per page (or per block
  of pages on a large host), coloured by owner class.  A block shows the class
  holding most of its pages, except that a block holding any orphaned or
  unattributed page shows that colour, and orphaned pixels get a red ring
  around them: a leak must stand out even when it is 1 page in 262144, so the
  picture errs on the side of showing it.
* :func:`class_bar_svg`: one stacked bar of memory by class.
* :func:`growth_svg`: class totals over a series of snapshots (two for
  ``diff``, every sample for ``watch``).

PNGs come from Pillow; SVGs are written here, small and dependency-free.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from html import escape

import numpy as np

from vmcore_tools.census.classes import PageClass, class_counts
from vmcore_tools.core.arrays import unique

#: map value of an orphaned page: not a census class, the reference scan's verdict on top of one
ORPHANED = 255
ORPHANED_LABEL = "orphaned"

#: one colour per class: muted for what is normal, loud for what is a leak
COLOURS: dict[int, tuple[int, int, int]] = {
    PageClass.NO_PAGE: (255, 255, 255),
    PageClass.UNREADABLE: (40, 40, 40),
    PageClass.FREE: (226, 226, 226),
    PageClass.FREE_PCP: (205, 210, 220),
    PageClass.RESERVED: (120, 120, 120),
    PageClass.SLAB: (244, 164, 96),
    PageClass.PAGE_TABLE: (150, 110, 190),
    PageClass.KERNEL_PAGE_TABLE: (110, 70, 150),
    PageClass.HUGETLB: (70, 160, 160),
    PageClass.OFFLINE: (90, 90, 90),
    PageClass.MOVABLE_NONLRU: (160, 120, 80),
    PageClass.PAGE_POOL: (90, 200, 210),
    PageClass.ANON: (120, 190, 110),
    PageClass.FILE: (100, 140, 210),
    PageClass.SHMEM: (150, 190, 235),
    PageClass.KERNEL_STACK: (230, 150, 190),
    PageClass.VMALLOC: (230, 210, 100),
    PageClass.PERCPU: (170, 170, 90),
    PageClass.PAGE_FRAG: (120, 200, 240),
    PageClass.LARGE_KMALLOC: (210, 180, 140),
    PageClass.ZERO_REF: (240, 200, 200),
    PageClass.UNATTRIBUTED: (255, 0, 255),
    PageClass.NIC_RING: (60, 110, 60),
    PageClass.PAGE_EXT: (140, 140, 160),
    PageClass.DEVICE: (200, 225, 200),
    PageClass.DAMAGED: (0, 0, 0),
    ORPHANED: (255, 0, 0),
}
#: drawn over the majority in a block: the first of these present wins
SALIENT = (ORPHANED, PageClass.UNATTRIBUTED)
#: the largest map, in pixels; above it a pixel stands for a block of pages
MAX_PIXELS = 1024 * 1024
#: radius of the ring drawn around an orphaned pixel, and how many orphaned pixels get one
MARKER = 3
MAX_MARKERS = 4096
MARKER_COLOUR = (200, 0, 0)


def label_of(value: int) -> str:
    return ORPHANED_LABEL if value == ORPHANED else PageClass(value).label


#: the colour of each label (a class, or ``orphaned``) as CSS/SVG wants it
HEX_COLOURS: dict[str, str] = {label_of(v): "#%02x%02x%02x" % rgb for v, rgb in COLOURS.items()}


@dataclass
class MemoryMap:
    rgb: np.ndarray               # (height, width, 3) uint8
    pages_per_pixel: int
    pages: dict[str, int]         # pages per label, orphaned split out of unattributed

    @property
    def width(self) -> int:
        return self.rgb.shape[1]

    @property
    def height(self) -> int:
        return self.rgb.shape[0]

    def png(self) -> bytes:
        from PIL import Image
        out = io.BytesIO()
        Image.fromarray(self.rgb, "RGB").save(out, "PNG", optimize=True)
        return out.getvalue()

    def caption(self, page_size: int) -> str:
        per_pixel = _size(self.pages_per_pixel * page_size)
        per_row = _size(self.pages_per_pixel * self.width * page_size)
        return (f"PFN 0 at the top left, growing left to right and down; one pixel = {per_pixel}, "
                f"one row = {per_row}")


def map_values(classes: np.ndarray, pfn: np.ndarray | None = None, order: np.ndarray | None = None) -> np.ndarray:
    """The census' class array with the orphaned allocations (head ``pfn``
    and ``order`` arrays) marked :data:`ORPHANED`, one pass per order."""
    values = classes.copy()
    if pfn is None or not pfn.size:
        return values
    order = np.zeros(pfn.size, np.uint8) if order is None else order
    for o in unique(order).tolist():
        heads = pfn[order == o].astype(np.int64)
        values[(heads[:, None] + np.arange(1 << o, dtype=np.int64)).ravel()] = ORPHANED
    return values


def memory_map(classes: np.ndarray, pfn: np.ndarray | None = None, order: np.ndarray | None = None) -> MemoryMap:
    """The physical memory map of a census (``Census.classes``), orphaned
    allocations (``pfn``, ``order``) marked."""
    values = map_values(classes, pfn, order)
    n = values.size
    per_pixel = 1
    while math.ceil(n / per_pixel) > MAX_PIXELS:
        per_pixel *= 2
    pixels = math.ceil(n / per_pixel)
    width = 512 if pixels <= 512 * 512 else 1024
    height = math.ceil(pixels / width)
    padded = np.full(height * width * per_pixel, PageClass.NO_PAGE, np.uint8)
    padded[:n] = values
    blocks = padded.reshape(-1, per_pixel)
    present = unique(padded)
    if per_pixel == 1:
        chosen = blocks[:, 0]
    else:
        counts = np.stack([np.count_nonzero(blocks == v, axis=1) for v in present], axis=1)
        chosen = present[np.argmax(counts, axis=1)].astype(np.uint8)
        for v in reversed(SALIENT):
            if v in present:
                chosen[counts[:, list(present).index(v)] > 0] = v
    palette = np.zeros((256, 3), np.uint8)
    for v, rgb in COLOURS.items():
        palette[v] = rgb
    rgb = palette[chosen].reshape(height, width, 3)
    _mark(rgb, np.nonzero(chosen == ORPHANED)[0], width)
    tally = class_counts(values)
    return MemoryMap(rgb=rgb, pages_per_pixel=per_pixel,
                     pages={label_of(v): int(tally[v]) for v in present if v != PageClass.NO_PAGE})


def _mark(rgb: np.ndarray, pixels: np.ndarray, width: int) -> None:
    """Draw a square ring of radius :data:`MARKER` around each orphaned pixel
    in :data:`MARKER_COLOUR`, a red that is no class's colour, so every
    pixel of a class colour still tells the truth about its page: one leaked page in a gigabyte is one
    pixel in 262144, which no eye finds without help.  Beyond
    :data:`MAX_MARKERS` the orphans are many enough to see unaided."""
    if not 0 < pixels.size <= MAX_MARKERS:
        return
    ys, xs = pixels // width, pixels % width
    h, w = rgb.shape[:2]
    r = MARKER
    ring = [(dy, dx) for dy in range(-r, r + 1) for dx in range(-r, r + 1) if max(abs(dy), abs(dx)) == r]
    for dy, dx in ring:
        y, x = ys + dy, xs + dx
        ok = (y >= 0) & (y < h) & (x >= 0) & (x < w)
        rgb[y[ok], x[ok]] = MARKER_COLOUR
    rgb[ys, xs] = COLOURS[ORPHANED]      # a ring never hides another orphan


# --- SVG --------------------------------------------------------------------

def _size(nbytes: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(nbytes) < 1024 or unit == "TiB":
            return f"{nbytes:.0f} {unit}" if unit == "B" or nbytes == int(nbytes) else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    raise AssertionError


def _svg(width: int, height: int, body: list[str], title: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" font-family="DejaVu Sans, sans-serif" font-size="12">'
            f"<title>{escape(title)}</title>" + "".join(body) + "</svg>\n")


def _legend(items: list[tuple[str, str]], x: int, y: int, columns: int, column_width: int) -> list[str]:
    out = []
    for i, (colour, text) in enumerate(items):
        cx, cy = x + (i % columns) * column_width, y + (i // columns) * 18
        out.append(f'<rect x="{cx}" y="{cy}" width="12" height="12" fill="{colour}" stroke="#444" '
                   f'stroke-width="0.5"/><text x="{cx + 17}" y="{cy + 10}">{escape(text)}</text>')
    return out


def class_bar_svg(pages: dict[str, int], page_size: int, title: str = "Memory by owner class") -> str:
    """A stacked bar of ``pages`` (label -> pages, labels of :class:`PageClass`
    or ``orphaned``), largest first, with a legend giving each size."""
    items = sorted(((k, v) for k, v in pages.items() if v > 0), key=lambda kv: -kv[1])
    total = sum(v for _, v in items) or 1
    width, bar = 900, 36
    body, x = [], 0.0
    for label, v in items:
        w = v / total * width
        body.append(f'<rect x="{x:.2f}" y="22" width="{max(w, 0.5):.2f}" height="{bar}" fill="{HEX_COLOURS[label]}">'
                    f"<title>{escape(label)}: {_size(v * page_size)}</title></rect>")
        x += w
    legend = [(HEX_COLOURS[k], f"{k} {_size(v * page_size)} ({100 * v / total:.1f}%)") for k, v in items]
    rows = math.ceil(len(legend) / 3)
    body = ([f'<text x="0" y="14" font-weight="bold">{escape(title)}: {_size(total * page_size)}</text>']
            + body + _legend(legend, 0, 22 + bar + 12, 3, 300))
    return _svg(width, 22 + bar + 12 + rows * 18 + 4, body, title)


def growth_svg(series: list[dict], top: int = 8, title: str = "Growth over time") -> str:
    """Lines of what changed most over a series of snapshots (``snapshot.py``
    documents): orphaned pages and the classes whose totals moved furthest
    from the first snapshot, in MiB against hours since the first."""
    ps = series[0]["page_size"]
    t0 = series[0]["taken_at"]
    xs = [((s["taken_at"] - t0) / 3600 if t0 is not None and s["taken_at"] is not None else float(i))
          for i, s in enumerate(series)]
    lines = {ORPHANED_LABEL: [s["orphaned_pages"] for s in series]}
    moved = sorted(series[0]["classes"],
                   key=lambda k: -max(abs(s["classes"].get(k, 0) - series[0]["classes"].get(k, 0)) for s in series))
    for k in moved[:top - 1]:
        if any(s["classes"].get(k, 0) != series[0]["classes"].get(k, 0) for s in series):
            lines[k] = [s["classes"].get(k, 0) for s in series]
    # each line as change since the first sample, so small classes stay readable beside large ones
    deltas = {k: [(v - ys[0]) * ps / 2**20 for v in ys] for k, ys in lines.items()}
    lo = min(0.0, *(min(d) for d in deltas.values()))
    hi = max(1e-9, *(max(d) for d in deltas.values()))
    left, top_, w, h = 70, 30, 620, 260
    xmax = max(xs[-1], 1e-9)

    def px(x: float) -> float:
        return left + x / xmax * w

    def py(y: float) -> float:
        return top_ + h - (y - lo) / (hi - lo) * h

    unit = "hours" if t0 is not None else "samples"
    body = [f'<text x="0" y="14" font-weight="bold">{escape(title)}: change since the first sample (MiB)</text>',
            f'<rect x="{left}" y="{top_}" width="{w}" height="{h}" fill="none" stroke="#888"/>',
            f'<line x1="{left}" y1="{py(0):.1f}" x2="{left + w}" y2="{py(0):.1f}" stroke="#bbb"/>']
    for frac in (0, 0.5, 1):
        y = lo + frac * (hi - lo)
        body.append(f'<text x="{left - 6}" y="{py(y) + 4:.1f}" text-anchor="end">{y:+.2f}</text>')
        x = frac * xmax
        body.append(f'<text x="{px(x):.1f}" y="{top_ + h + 16}" text-anchor="middle">{x:.2f}</text>')
    body.append(f'<text x="{left + w / 2}" y="{top_ + h + 32}" text-anchor="middle">{unit} since the first sample</text>')
    legend = []
    for k, d in deltas.items():
        c = HEX_COLOURS.get(k, "#000")
        points = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in zip(xs, d))
        width = 3 if k == ORPHANED_LABEL else 1.5
        body.append(f'<polyline points="{points}" fill="none" stroke="{c}" stroke-width="{width}">'
                    f"<title>{escape(k)}</title></polyline>")
        legend.append((c, f"{k} {d[-1]:+.2f} MiB"))
    body += _legend(legend, left + w + 20, top_, 1, 0)
    return _svg(left + w + 220, top_ + h + 44, body, title)
