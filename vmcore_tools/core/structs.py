"""Kernel structs read from their DWARF layout: arrays of structs decoded in
bulk, the member a field goes by on this kernel, and the error a reader
raises when a kernel's types lack what its route needs."""

from __future__ import annotations

from collections.abc import Iterable

import drgn
import numpy as np


_UINT = {1: "<u1", 2: "<u2", 4: "<u4", 8: "<u8"}


class UnknownLayout(LookupError):
    """The driver's types on this kernel lack a member the walker's route needs."""


def target_type(ty: drgn.Type) -> drgn.Type:
    """The struct an object of type ``ty`` leads to: typedefs, qualifiers,
    pointers and arrays stripped (``struct i40e_ring **`` -> ``struct i40e_ring``)."""
    ty = ty.unaliased()
    while ty.kind in (drgn.TypeKind.POINTER, drgn.TypeKind.ARRAY):
        ty = ty.type.unaliased()
    return ty


def struct_array(prog: drgn.Program, addr: int, type_name: str | drgn.Type, count: int,
                 members: dict[str, str]) -> dict[str, np.ndarray]:
    """Decode ``count`` consecutive structs at ``addr`` in one read.

    ``members`` maps our name to a member designator of ``type_name`` (nested
    ones as ``"a.b"``); a designator the type lacks is left out of the
    result, so callers can ask for fields that only some kernels have.
    Integer and pointer members, bit fields too (ice's ``tx_buf.type:4``),
    come back as uint64 numpy arrays.
    """
    ty = prog.type(type_name)
    while ty.kind == drgn.TypeKind.TYPEDEF:      # vring_desc_t and the like
        ty = ty.type
    raw = np.frombuffer(prog.read(addr, ty.size * count), np.uint8).reshape(count, ty.size)
    out = {}
    for ours, designator in members.items():
        try:
            bit, bits, size = _member_bits(ty, designator)
        except LookupError:
            continue
        off = bit // 8
        if bits is None:
            out[ours] = raw[:, off:off + size].copy().view(_UINT[size]).reshape(-1).astype(np.uint64)
            continue
        word = np.zeros((count, 8), np.uint8)   # the bytes holding the field, as a little-endian word
        width = min(8, ty.size - off)
        word[:, :width] = raw[:, off:off + width]
        shifted = word.view("<u8").reshape(-1) >> np.uint64(bit % 8)
        out[ours] = shifted & np.uint64((1 << bits) - 1)
    return out


def _member_bits(ty: drgn.Type, designator: str) -> tuple[int, int | None, int]:
    """Bit offset, bit-field width (None for a whole member) and byte size of
    a member designator."""
    bit, bits = 0, None
    for part in designator.split("."):
        member = ty.member(part)
        bit += member.bit_offset
        bits = member.bit_field_size
        ty = member.type
        while ty.kind == drgn.TypeKind.TYPEDEF:
            ty = ty.type
    return bit, bits, ty.size


def int_members(obj: drgn.Object) -> dict[str, int]:
    """The integer members of a stats struct, e.g. ``i40e_rx_queue_stats``."""
    out = {}
    for m in obj.type_.members or ():
        if m.name and drgn.sizeof(m.type) <= 8 and m.type.unqualified().kind in (
                drgn.TypeKind.INT, drgn.TypeKind.TYPEDEF):
            try:
                out[m.name] = getattr(obj, m.name).value_()
            except (TypeError, drgn.FaultError):
                continue
    return out


def struct_type(obj: drgn.Object) -> drgn.Type:
    """The struct type of an object or of the object a pointer points to."""
    t = obj.type_.unaliased()
    return t.type.unaliased() if t.kind == drgn.TypeKind.POINTER else t


def first_member(ty: drgn.Type, names: Iterable[str]) -> str | None:
    """The first of ``names`` that struct ``ty`` has: the member a field
    goes by on this kernel (i40e's ``tx_bi``, ice's ``tx_buf``)."""
    return next((n for n in names if ty.has_member(n)), None)


def member_or(obj: drgn.Object, name: str, default: int = -1) -> int:
    """An integer member where this kernel's struct has it."""
    return getattr(obj, name).value_() if struct_type(obj).has_member(name) else default
