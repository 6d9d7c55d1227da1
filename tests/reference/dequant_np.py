#!/usr/bin/python3
"""Vectorised NumPy decoders for the GGUF/ggml weight types used by DeepSeek quants.

Written from formats.md §2. Every intermediate is a float32 NumPy operation performed in the same
order as the spec states (NumPy float32 ops are single IEEE roundings, no FMA), so the output is
bit-identical to llama.cpp's to_float.

    dequantize(raw, ggml_type, n=None) -> float32 1-D array   (raw: bytes / uint8 array, whole blocks)
    dequantize_tensor(ti)               -> float32 array of shape ti.shape   (ti: gguf_np.TensorInfo)
    dequantize_rows(ti, rows)           -> float32 [len(rows), ne0]          (rows of a 2-D view)
    dequantize_slice(ti, i2)            -> float32 [ne1, ne0]                 (one ne2 slice, e.g. an expert)

Lookup tables are read from experts/data/*.txt (a '#' header line, then one value per line).
"""

import os

import numpy as np

from gguf_np import GGML_TYPES, GGML_TYPE_ID

_HERE = os.path.dirname(os.path.abspath(__file__))
TABLE_DIR = os.environ.get("TRITMOE_TABLE_DIR",
                           os.path.join(_HERE, "..", "..", "experts", "data"))

F32 = np.float32


def _load_table(name):
    path = os.path.join(TABLE_DIR, name + ".txt")
    vals = []
    with open(path) as fh:
        for line in fh:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            vals.append(int(line, 0))
    return vals


_tables = {}


def _table(name):
    if name in _tables:
        return _tables[name]
    if name == "iq1s_grid":
        v = np.array(_load_table("iq1s_grid"), dtype="<u8")
        assert v.size == 2048
        t = v.view(np.int8).reshape(2048, 8).astype(F32)          # byte k = element k (LE)
    elif name == "iq2xxs_grid":
        v = np.array(_load_table("iq2xxs_grid"), dtype="<u8")
        assert v.size == 256
        t = v.view(np.uint8).reshape(256, 8).astype(F32)
    elif name == "ksigns_iq2xs":
        t = np.array(_load_table("ksigns_iq2xs"), dtype=np.uint8)
        assert t.size == 128
    elif name == "kmask_iq2xs":
        t = np.array(_load_table("kmask_iq2xs"), dtype=np.uint8)
        assert t.size == 8
    elif name == "pow3_tq":
        t = np.array(_load_table("pow3_tq"), dtype=np.uint32)
        assert t.size == 6
    else:
        raise KeyError(name)
    _tables[name] = t
    return t


def _f16(b2):
    """(..., 2) uint8 little-endian fp16 -> float32 (exact)."""
    return np.ascontiguousarray(b2).view("<f2")[..., 0].astype(F32)


def _u16(b2):
    return np.ascontiguousarray(b2).view("<u2")


def _u32(b4):
    return np.ascontiguousarray(b4).view("<u4")


# --------------------------------------------------------------------------------------------
# per-type decoders: blocks is a (nb, block_bytes) uint8 array; result (nb, block_elems) float32
# --------------------------------------------------------------------------------------------

def _dq_f32(b):
    return np.ascontiguousarray(b).view("<f4").astype(F32).reshape(-1, 1)


def _dq_f16(b):
    return np.ascontiguousarray(b).view("<f2").astype(F32).reshape(-1, 1)


def _dq_bf16(b):
    u = np.ascontiguousarray(b).view("<u2").astype(np.uint32) << np.uint32(16)
    return u.view(F32).reshape(-1, 1)


def _dq_q8_0(b):
    d = _f16(b[:, 0:2])
    qs = b[:, 2:34].view(np.int8).astype(F32)
    return qs * d[:, None]


def _dq_q4_0(b):
    d = _f16(b[:, 0:2])
    qs = b[:, 2:18].astype(np.int32)
    lo = (qs & 0xF) - 8
    hi = (qs >> 4) - 8
    q = np.concatenate([lo, hi], axis=1).astype(F32)
    return q * d[:, None]


def _dq_q8_k(b):
    d = np.ascontiguousarray(b[:, 0:4]).view("<f4")[:, 0].astype(F32)
    qs = b[:, 4:260].view(np.int8).astype(F32)
    return d[:, None] * qs


def _dq_q2_k(b):
    nb = b.shape[0]
    scales = b[:, 0:16].astype(np.int32).reshape(nb, 2, 4, 2)          # [h][j][p]
    qs = b[:, 16:80].astype(np.int32).reshape(nb, 2, 1, 2, 16)         # [h][-][p][l]
    d = _f16(b[:, 80:82])
    dmin = _f16(b[:, 82:84])
    shifts = (2 * np.arange(4)).reshape(1, 1, 4, 1, 1)
    q = ((qs >> shifts) & 3).astype(F32)                                # [h][j][p][l]
    dl = d[:, None, None, None] * (scales & 0xF).astype(F32)
    ml = dmin[:, None, None, None] * (scales >> 4).astype(F32)
    y = dl[..., None] * q - ml[..., None]
    return y.reshape(nb, 256)


def _q4k_scales(q):
    """q: (nb, 12) int32 -> (sc, m) each (nb, 8) int32."""
    sc = np.empty((q.shape[0], 8), dtype=np.int32)
    m = np.empty_like(sc)
    sc[:, 0:4] = q[:, 0:4] & 63
    m[:, 0:4] = q[:, 4:8] & 63
    sc[:, 4:8] = (q[:, 8:12] & 0xF) | ((q[:, 0:4] >> 6) << 4)
    m[:, 4:8] = (q[:, 8:12] >> 4) | ((q[:, 4:8] >> 6) << 4)
    return sc, m


def _dq_q4_k(b):
    nb = b.shape[0]
    d = _f16(b[:, 0:2])
    dmin = _f16(b[:, 2:4])
    sc, m = _q4k_scales(b[:, 4:16].astype(np.int32))
    qs = b[:, 16:144].astype(np.int32).reshape(nb, 4, 1, 32)
    q = np.concatenate([qs & 0xF, qs >> 4], axis=2).reshape(nb, 8, 32).astype(F32)
    d1 = d[:, None] * sc.astype(F32)
    m1 = dmin[:, None] * m.astype(F32)
    y = d1[..., None] * q - m1[..., None]
    return y.reshape(nb, 256)


def _dq_q6_k(b):
    nb = b.shape[0]
    ql = b[:, 0:128].astype(np.int32).reshape(nb, 2, 2, 32)     # [h][a][l]: L[l + 32a]
    qh = b[:, 128:192].astype(np.int32).reshape(nb, 2, 32)      # [h][l]
    S = b[:, 192:208].view(np.int8).astype(F32).reshape(nb, 2, 4, 2)   # [h][k][l//16]
    d = _f16(b[:, 208:210])
    q = np.empty((nb, 2, 4, 32), dtype=np.int32)
    q[:, :, 0] = (ql[:, :, 0] & 0xF) | (((qh >> 0) & 3) << 4)
    q[:, :, 1] = (ql[:, :, 1] & 0xF) | (((qh >> 2) & 3) << 4)
    q[:, :, 2] = (ql[:, :, 0] >> 4) | (((qh >> 4) & 3) << 4)
    q[:, :, 3] = (ql[:, :, 1] >> 4) | (((qh >> 6) & 3) << 4)
    q = (q - 32).astype(F32).reshape(nb, 2, 4, 2, 16)
    ds = d[:, None, None, None] * S                              # (d * sc)
    y = ds[..., None] * q
    return y.reshape(nb, 256)


def _dq_iq2_xxs(b):
    nb = b.shape[0]
    grid = _table("iq2xxs_grid")
    ksigns = _table("ksigns_iq2xs")
    d = _f16(b[:, 0:2])
    w = _u32(b[:, 2:66]).reshape(nb, 8, 2)
    a0 = w[:, :, 0]
    a1 = w[:, :, 1]
    sh8 = (8 * np.arange(4, dtype=np.uint32)).reshape(1, 1, 4)
    sh7 = (7 * np.arange(4, dtype=np.uint32)).reshape(1, 1, 4)
    gidx = (a0[..., None] >> sh8) & np.uint32(0xFF)               # (nb, 8, 4)
    sidx = (a1[..., None] >> sh7) & np.uint32(127)
    ls = (a1 >> np.uint32(28)).astype(F32)                        # (nb, 8)
    db = (d[:, None] * (F32(0.5) + ls)) * F32(0.25)
    g = grid[gidx]                                                # (nb, 8, 4, 8)
    signs = ksigns[sidx]                                          # (nb, 8, 4)
    bits = (signs[..., None] >> np.arange(8, dtype=np.uint8)) & 1
    sgn = np.where(bits != 0, F32(-1.0), F32(1.0))
    y = (db[:, :, None, None] * g) * sgn
    return y.reshape(nb, 256)


def _dq_iq1_s(b):
    nb = b.shape[0]
    grid = _table("iq1s_grid")
    d = _f16(b[:, 0:2])
    qs = b[:, 2:34].astype(np.int32).reshape(nb, 8, 4)
    qh = _u16(b[:, 34:50]).astype(np.int32)                       # (nb, 8)
    s = (qh >> 12) & 7
    dl = d[:, None] * (2 * s + 1).astype(F32)                     # (nb, 8)
    delta = np.where(qh & 0x8000, F32(-0.125), F32(0.125))
    sh = (3 * np.arange(4)).reshape(1, 1, 4)
    idx = qs | (((qh[..., None] >> sh) & 7) << 8)                 # (nb, 8, 4)
    g = grid[idx]                                                 # (nb, 8, 4, 8)
    y = dl[:, :, None, None] * (g + delta[:, :, None, None])
    return y.reshape(nb, 256)


def _dq_iq1_m(b):
    nb = b.shape[0]
    grid = _table("iq1s_grid")
    qs = b[:, 0:32].astype(np.int32).reshape(nb, 8, 4)
    qh = b[:, 32:48].astype(np.int32).reshape(nb, 8, 2)           # h0 = qh[2ib], h1 = qh[2ib+1]
    sc = _u16(b[:, 48:56]).astype(np.int32)                       # (nb, 4)
    dbits = ((sc[:, 0] >> 12) | ((sc[:, 1] >> 8) & 0x00F0) | ((sc[:, 2] >> 4) & 0x0F00)
             | (sc[:, 3] & 0xF000)).astype(np.uint16)
    d = dbits.view("<f2").astype(F32)
    ib = np.arange(8)
    scw = sc[:, ib // 2]                                          # (nb, 8)
    shift = (6 * (ib % 2)).reshape(1, 8)
    s1 = (scw >> shift) & 7
    s2 = (scw >> (shift + 3)) & 7
    dl1 = d[:, None] * (2 * s1 + 1).astype(F32)
    dl2 = d[:, None] * (2 * s2 + 1).astype(F32)
    dl = np.stack([dl1, dl1, dl2, dl2], axis=2)                   # (nb, 8, 4)
    h = np.repeat(qh, 2, axis=2)                                  # h0,h0,h1,h1
    hsh = np.array([8, 4, 8, 4]).reshape(1, 1, 4)
    idx = qs | ((h << hsh) & 0x700)
    dmask = np.array([0x08, 0x80, 0x08, 0x80]).reshape(1, 1, 4)
    delta = np.where(h & dmask, F32(-0.125), F32(0.125))
    g = grid[idx]                                                 # (nb, 8, 4, 8)
    y = dl[..., None] * (g + delta[..., None])
    return y.reshape(nb, 256)


def _trits(byts, n_digits):
    """byts: (..., m) uint8 -> (..., n_digits, m) trits, digit 0 most significant."""
    pow3 = _table("pow3_tq")[:n_digits].reshape((1,) * (byts.ndim - 1) + (n_digits, 1))
    x = byts.astype(np.uint32)[..., None, :]
    return (((x * pow3) & np.uint32(0xFF)) * np.uint32(3)) >> np.uint32(8)


def _dq_tq1_0(b):
    nb = b.shape[0]
    d = _f16(b[:, 52:54])
    t0 = _trits(b[:, 0:32], 5).reshape(nb, 160)        # element 32n + m
    t1 = _trits(b[:, 32:48], 5).reshape(nb, 80)        # element 160 + 16n + m
    t2 = _trits(b[:, 48:52], 4).reshape(nb, 16)        # element 240 + 4n + j
    t = np.concatenate([t0, t1, t2], axis=1).astype(np.int32)
    return (t - 1).astype(F32) * d[:, None]


def _dq_tq2_0(b):
    nb = b.shape[0]
    qs = b[:, 0:64].astype(np.int32).reshape(nb, 2, 1, 32)      # [h][-][m]
    d = _f16(b[:, 64:66])
    sh = (2 * np.arange(4)).reshape(1, 1, 4, 1)
    q = ((qs >> sh) & 3) - 1                                   # [h][l][m]
    return q.reshape(nb, 256).astype(F32) * d[:, None]


_DECODERS = {
    "F32": _dq_f32, "F16": _dq_f16, "BF16": _dq_bf16,
    "Q4_0": _dq_q4_0, "Q8_0": _dq_q8_0, "Q8_K": _dq_q8_k,
    "Q2_K": _dq_q2_k, "Q4_K": _dq_q4_k, "Q6_K": _dq_q6_k,
    "IQ2_XXS": _dq_iq2_xxs, "IQ1_S": _dq_iq1_s, "IQ1_M": _dq_iq1_m,
    "TQ1_0": _dq_tq1_0, "TQ2_0": _dq_tq2_0,
}

SUPPORTED_TYPES = sorted(GGML_TYPE_ID[n] for n in _DECODERS)

# decode at most this many blocks at once (bounds temporary memory)
_CHUNK_BLOCKS = 1 << 16


def dequantize(raw, ggml_type, n=None):
    """Decode whole blocks of raw bytes of type ggml_type (id or name) to a float32 1-D array."""
    if isinstance(ggml_type, str):
        ggml_type = GGML_TYPE_ID[ggml_type]
    name, be, bb = GGML_TYPES[ggml_type]
    if name not in _DECODERS:
        raise NotImplementedError("no decoder for ggml type %s (%d)" % (name, ggml_type))
    buf = np.frombuffer(raw, dtype=np.uint8) if isinstance(raw, (bytes, bytearray, memoryview)) \
        else np.asarray(raw, dtype=np.uint8).reshape(-1)
    if buf.size % bb:
        raise ValueError("%d bytes is not a whole number of %s blocks (%d bytes)" % (buf.size, name, bb))
    nblk = buf.size // bb
    if n is not None and n != nblk * be:
        raise ValueError("%d elements requested, the bytes hold %d" % (n, nblk * be))
    blocks = buf.reshape(nblk, bb)
    out = np.empty(nblk * be, dtype=F32)
    dec = _DECODERS[name]
    for s in range(0, nblk, _CHUNK_BLOCKS):
        e = min(nblk, s + _CHUNK_BLOCKS)
        out[s * be:e * be] = dec(np.ascontiguousarray(blocks[s:e])).reshape(-1)
    return out


def dequantize_tensor(ti):
    return dequantize(ti.data, ti.type).reshape(ti.shape)


def dequantize_rows(ti, rows):
    """Rows (ne0 elements each) of a tensor, counting over all higher dims flattened."""
    rb = ti.row_bytes
    n_rows = ti.n_elements // ti.ne[0]
    rows = np.asarray(rows, dtype=np.int64).reshape(-1)
    if rows.size and (rows.min() < 0 or rows.max() >= n_rows):
        raise IndexError("row index out of range for %s (%d rows)" % (ti.name, n_rows))
    data = ti.data.reshape(n_rows, rb)[rows]
    return dequantize(data, ti.type).reshape(rows.size, ti.ne[0])


def dequantize_slice(ti, i2):
    """The i2-th ne2 slice of a 3-D tensor as [ne1, ne0] (for expert tensors: expert i2)."""
    if len(ti.ne) < 3:
        raise ValueError("%s is not 3-D" % ti.name)
    ne0, ne1 = ti.ne[0], ti.ne[1]
    sb = ti.row_bytes * ne1
    if not 0 <= i2 < ti.ne[2]:
        raise IndexError("slice %d out of range for %s" % (i2, ti.name))
    return dequantize(ti.data[i2 * sb:(i2 + 1) * sb], ti.type).reshape(ne1, ne0)
