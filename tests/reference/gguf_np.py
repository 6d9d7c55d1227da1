#!/usr/bin/python3
"""Minimal GGUF v2/v3 reader and writer (NumPy + standard library only).

Written from the project's format spec (shared/reference/formats.md §1); it is the independent
reference used by the Python tests, so it shares no code with the C++ reader.

Reader
    f = GGUFReader("model.gguf")          # one file, no shard handling
    m = GGUFModel("model-00001-of-00003.gguf")   # follows split shards (any shard may be given)
    m.kv["deepseek2.block_count"]         # KV values as Python objects (arrays -> lists)
    m.kv_type["deepseek2.block_count"]    # (gguf_type, elem_type or None)
    t = m.tensor("blk.0.attn_q_a.weight") # TensorInfo: name, ne (list, trailing dims kept as written),
                                          #   type (ggml id), nbytes, data (np.uint8 memmap view)
    t.shape                               # numpy shape = reversed ne (4 dims padded away)

Writer
    w = GGUFWriter(path)
    w.add("general.architecture", "deepseek2")                 # type inferred (str/bool/int->?)...
    w.add("deepseek2.block_count", 3, GGUF_UINT32)              # ...or given explicitly
    w.add("tokenizer.ggml.tokens", ["a", "b"], GGUF_ARRAY, GGUF_STRING)
    w.add_tensor("token_embd.weight", raw_bytes_or_ndarray, ggml_type, ne)
    w.write()                    # one file; w.write_split(prefix, n_shards) writes gguf-split shards
"""

import mmap
import os
import re
import struct

import numpy as np

GGUF_MAGIC = b"GGUF"
GGUF_DEFAULT_ALIGNMENT = 32

# gguf value types
GGUF_UINT8, GGUF_INT8, GGUF_UINT16, GGUF_INT16, GGUF_UINT32, GGUF_INT32, GGUF_FLOAT32, \
    GGUF_BOOL, GGUF_STRING, GGUF_ARRAY, GGUF_UINT64, GGUF_INT64, GGUF_FLOAT64 = range(13)

GGUF_TYPE_NAMES = ["u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "str", "array",
                   "u64", "i64", "f64"]

# scalar struct formats (little-endian) for the fixed-size gguf types
_SCALAR_FMT = {
    GGUF_UINT8: "<B", GGUF_INT8: "<b", GGUF_UINT16: "<H", GGUF_INT16: "<h",
    GGUF_UINT32: "<I", GGUF_INT32: "<i", GGUF_FLOAT32: "<f", GGUF_BOOL: "<b",
    GGUF_UINT64: "<Q", GGUF_INT64: "<q", GGUF_FLOAT64: "<d",
}
_NUMPY_DTYPE = {
    GGUF_UINT8: "<u1", GGUF_INT8: "<i1", GGUF_UINT16: "<u2", GGUF_INT16: "<i2",
    GGUF_UINT32: "<u4", GGUF_INT32: "<i4", GGUF_FLOAT32: "<f4", GGUF_BOOL: "<i1",
    GGUF_UINT64: "<u8", GGUF_INT64: "<i8", GGUF_FLOAT64: "<f8",
}

# ggml types: id -> (name, block elements, block bytes). Ids not listed are rejected.
GGML_TYPES = {
    0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22), 7: ("Q5_1", 32, 24), 8: ("Q8_0", 32, 34), 9: ("Q8_1", 32, 36),
    10: ("Q2_K", 256, 84), 11: ("Q3_K", 256, 110), 12: ("Q4_K", 256, 144),
    13: ("Q5_K", 256, 176), 14: ("Q6_K", 256, 210), 15: ("Q8_K", 256, 292),
    16: ("IQ2_XXS", 256, 66), 17: ("IQ2_XS", 256, 74), 18: ("IQ3_XXS", 256, 98),
    19: ("IQ1_S", 256, 50), 20: ("IQ4_NL", 32, 18), 21: ("IQ3_S", 256, 110),
    22: ("IQ2_S", 256, 82), 23: ("IQ4_XS", 256, 136), 24: ("I8", 1, 1), 25: ("I16", 1, 2),
    26: ("I32", 1, 4), 27: ("I64", 1, 8), 28: ("F64", 1, 8), 29: ("IQ1_M", 256, 56),
    30: ("BF16", 1, 2), 34: ("TQ1_0", 256, 54), 35: ("TQ2_0", 256, 66),
}
GGML_TYPE_ID = {v[0]: k for k, v in GGML_TYPES.items()}

MAX_NAME = 63
MAX_STRING = 1 << 30
MAX_ARRAY = 1 << 30

SPLIT_RE = re.compile(r"^(.*)-(\d{5})-of-(\d{5})\.gguf$")


class GGUFError(Exception):
    pass


def pad_to(x, n):
    return (x + n - 1) // n * n


def ggml_nbytes(ggml_type, ne):
    if ggml_type not in GGML_TYPES:
        raise GGUFError("unknown ggml type id %d" % ggml_type)
    _, be, bb = GGML_TYPES[ggml_type]
    if ne[0] % be:
        raise GGUFError("ne0=%d is not a multiple of the block size %d of type %s"
                        % (ne[0], be, GGML_TYPES[ggml_type][0]))
    n = ne[0] // be * bb
    for d in ne[1:]:
        n *= d
    return n


def row_bytes(ggml_type, ne0):
    _, be, bb = GGML_TYPES[ggml_type]
    return ne0 // be * bb


class TensorInfo:
    __slots__ = ("name", "ne", "type", "offset", "abs_offset", "nbytes", "data", "path")

    @property
    def shape(self):
        """numpy (C-order) shape: reversed ne with trailing 1-dims of ne dropped (at least 1-D)."""
        ne = list(self.ne)
        while len(ne) > 1 and ne[-1] == 1:
            ne.pop()
        return tuple(reversed(ne))

    @property
    def n_elements(self):
        n = 1
        for d in self.ne:
            n *= d
        return n

    @property
    def type_name(self):
        return GGML_TYPES[self.type][0]

    @property
    def row_bytes(self):
        return row_bytes(self.type, self.ne[0])

    def __repr__(self):
        return "TensorInfo(%s, ne=%s, %s, offset=%d, nbytes=%d)" % (
            self.name, list(self.ne), self.type_name, self.offset, self.nbytes)


class GGUFReader:
    """One GGUF file. Tensor data are views of a read-only memory map (nothing is copied)."""

    def __init__(self, path):
        self.path = path
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size < 24:
                raise GGUFError("%s: file too small for a GGUF header (%d bytes)" % (path, size))
            self._mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        self.file_size = size
        self._buf = np.frombuffer(self._mm, dtype=np.uint8)
        self._pos = 0
        self._parse()

    # -- low-level readers ------------------------------------------------------------------
    def _need(self, n, what):
        if self._pos + n > self.file_size:
            raise GGUFError("%s: truncated while reading %s at offset %d" % (self.path, what, self._pos))

    def _scalar(self, t, what="value"):
        fmt = _SCALAR_FMT[t]
        n = struct.calcsize(fmt)
        self._need(n, what)
        v = struct.unpack_from(fmt, self._mm, self._pos)[0]
        self._pos += n
        if t == GGUF_BOOL:
            v = v != 0
        return v

    def _string(self, what="string"):
        n = self._scalar(GGUF_UINT64, what + " length")
        if n > MAX_STRING:
            raise GGUFError("%s: %s length %d too large" % (self.path, what, n))
        self._need(n, what)
        b = bytes(self._mm[self._pos:self._pos + n])
        self._pos += n
        try:
            return b.decode("utf-8")
        except UnicodeDecodeError:
            raise GGUFError("%s: %s at offset %d is not valid UTF-8" % (self.path, what, self._pos - n))

    def _value(self, t, key):
        if t == GGUF_STRING:
            return self._string("value of " + key)
        if t in _SCALAR_FMT:
            return self._scalar(t, "value of " + key)
        raise GGUFError("%s: key %s has invalid value type %d" % (self.path, key, t))

    # -- parse ---------------------------------------------------------------------------------
    def _parse(self):
        if bytes(self._mm[0:4]) != GGUF_MAGIC:
            raise GGUFError("%s: bad magic %r (not a GGUF file)" % (self.path, bytes(self._mm[0:4])))
        self._pos = 4
        version = self._scalar(GGUF_UINT32, "version")
        if version & 0xFFFF == 0:
            raise GGUFError("%s: version field 0x%08x looks big-endian" % (self.path, version))
        if version not in (2, 3):
            raise GGUFError("%s: unsupported GGUF version %d" % (self.path, version))
        self.version = version
        n_tensors = self._scalar(GGUF_INT64, "n_tensors")
        n_kv = self._scalar(GGUF_INT64, "n_kv")
        if n_tensors < 0 or n_kv < 0:
            raise GGUFError("%s: negative counts" % self.path)

        self.kv = {}
        self.kv_type = {}
        self.kv_offset = {}
        for _ in range(n_kv):
            off = self._pos
            key = self._string("key")
            if not key:
                raise GGUFError("%s: empty key at offset %d" % (self.path, off))
            if key in self.kv:
                raise GGUFError("%s: duplicate key %s" % (self.path, key))
            t = self._scalar(GGUF_INT32, "type of " + key)
            if t == GGUF_ARRAY:
                et = self._scalar(GGUF_INT32, "array type of " + key)
                n = self._scalar(GGUF_UINT64, "array length of " + key)
                if n > MAX_ARRAY:
                    raise GGUFError("%s: array %s too long (%d)" % (self.path, key, n))
                if et == GGUF_ARRAY:
                    raise GGUFError("%s: nested array in %s" % (self.path, key))
                if et == GGUF_STRING:
                    val = [self._string("element of " + key) for _ in range(n)]
                elif et in _NUMPY_DTYPE:
                    dt = np.dtype(_NUMPY_DTYPE[et])
                    self._need(n * dt.itemsize, key)
                    arr = np.frombuffer(self._mm, dtype=dt, count=n, offset=self._pos)
                    self._pos += n * dt.itemsize
                    val = [bool(x) for x in arr] if et == GGUF_BOOL else arr.tolist()
                else:
                    raise GGUFError("%s: key %s has invalid array type %d" % (self.path, key, et))
                self.kv_type[key] = (GGUF_ARRAY, et)
            else:
                val = self._value(t, key)
                self.kv_type[key] = (t, None)
            self.kv[key] = val
            self.kv_offset[key] = off

        align = GGUF_DEFAULT_ALIGNMENT
        if "general.alignment" in self.kv:
            if self.kv_type["general.alignment"][0] != GGUF_UINT32:
                raise GGUFError("%s: general.alignment must be uint32" % self.path)
            align = self.kv["general.alignment"]
            if align == 0 or align & (align - 1):
                raise GGUFError("%s: general.alignment %d is not a power of two" % (self.path, align))
        self.alignment = align

        self.tensors = {}
        self.tensor_order = []
        expected = 0
        for _ in range(n_tensors):
            ti = TensorInfo()
            ti.name = self._string("tensor name")
            if len(ti.name.encode()) > MAX_NAME:
                raise GGUFError("%s: tensor name %r longer than %d bytes" % (self.path, ti.name, MAX_NAME))
            if ti.name in self.tensors:
                raise GGUFError("%s: duplicate tensor %s" % (self.path, ti.name))
            nd = self._scalar(GGUF_UINT32, "n_dims of " + ti.name)
            if not 1 <= nd <= 4:
                raise GGUFError("%s: tensor %s has n_dims=%d" % (self.path, ti.name, nd))
            ti.ne = [self._scalar(GGUF_INT64, "ne of " + ti.name) for _ in range(nd)]
            if any(d < 0 for d in ti.ne):
                raise GGUFError("%s: tensor %s has negative dims %s" % (self.path, ti.name, ti.ne))
            ti.type = self._scalar(GGUF_INT32, "type of " + ti.name)
            if ti.type not in GGML_TYPES:
                raise GGUFError("%s: tensor %s has unknown ggml type %d" % (self.path, ti.name, ti.type))
            ti.offset = self._scalar(GGUF_UINT64, "offset of " + ti.name)
            ti.nbytes = ggml_nbytes(ti.type, ti.ne)
            if ti.offset != expected:
                raise GGUFError("%s: tensor %s offset %d, expected %d (offsets must be sequential)"
                                % (self.path, ti.name, ti.offset, expected))
            expected += pad_to(ti.nbytes, align)
            ti.path = self.path
            self.tensors[ti.name] = ti
            self.tensor_order.append(ti.name)

        self.data_offset = pad_to(self._pos, align) if n_tensors > 0 else self._pos
        for ti in self.tensors.values():
            ti.abs_offset = self.data_offset + ti.offset
            if ti.abs_offset + ti.nbytes > self.file_size:
                raise GGUFError("%s: data of tensor %s (%d bytes at %d) runs past the end of the file (%d)"
                                % (self.path, ti.name, ti.nbytes, ti.abs_offset, self.file_size))
            ti.data = self._buf[ti.abs_offset:ti.abs_offset + ti.nbytes]


class GGUFModel:
    """A model given as one GGUF file or as gguf-split shards. Metadata from shard 0."""

    def __init__(self, path):
        first = GGUFReader(path)
        count = first.kv.get("split.count", 0)
        self.shards = [first]
        if count and count > 1:
            m = SPLIT_RE.match(os.path.basename(path))
            if not m:
                raise GGUFError("%s: split.count=%d but the name does not end in -NNNNN-of-MMMMM.gguf"
                                % (path, count))
            prefix = os.path.join(os.path.dirname(path), m.group(1))
            if int(m.group(3)) != count:
                raise GGUFError("%s: file name says %s shards, split.count says %d"
                                % (path, m.group(3), count))
            self.shards = []
            for i in range(count):
                p = "%s-%05d-of-%05d.gguf" % (prefix, i + 1, count)
                r = first if os.path.abspath(p) == os.path.abspath(path) else GGUFReader(p)
                if r.kv.get("split.no") != i:
                    raise GGUFError("%s: split.no is %r, expected %d" % (p, r.kv.get("split.no"), i))
                if r.kv.get("split.count") != count:
                    raise GGUFError("%s: split.count is %r, expected %d" % (p, r.kv.get("split.count"), count))
                self.shards.append(r)
        head = self.shards[0]
        self.kv = head.kv
        self.kv_type = head.kv_type
        self.tensors = {}
        for r in self.shards:
            for name in r.tensor_order:
                if name in self.tensors:
                    raise GGUFError("tensor %s appears in %s and %s" % (name, self.tensors[name].path, r.path))
                self.tensors[name] = r.tensors[name]
        if count and count > 1 and "split.tensors.count" in self.kv:
            if self.kv["split.tensors.count"] != len(self.tensors):
                raise GGUFError("split.tensors.count=%d but the shards hold %d tensors"
                                % (self.kv["split.tensors.count"], len(self.tensors)))

    def has(self, name):
        return name in self.tensors

    def tensor(self, name):
        try:
            return self.tensors[name]
        except KeyError:
            raise GGUFError("tensor %s not found in the model" % name) from None


# ------------------------------------------------------------------------------------------------
# writer
# ------------------------------------------------------------------------------------------------

def _infer_type(v):
    if isinstance(v, bool):
        return GGUF_BOOL
    if isinstance(v, str):
        return GGUF_STRING
    if isinstance(v, int):
        return GGUF_INT32 if -(1 << 31) <= v < (1 << 31) else GGUF_INT64
    if isinstance(v, float):
        return GGUF_FLOAT32
    raise GGUFError("cannot infer gguf type of %r" % (v,))


def _pack_string(s):
    b = s.encode("utf-8")
    return struct.pack("<Q", len(b)) + b


def _pack_scalar(t, v):
    if t == GGUF_STRING:
        return _pack_string(v)
    if t == GGUF_BOOL:
        return struct.pack("<b", 1 if v else 0)
    return struct.pack(_SCALAR_FMT[t], v)


class GGUFWriter:
    def __init__(self, path=None, alignment=GGUF_DEFAULT_ALIGNMENT):
        self.path = path
        self.alignment = alignment
        self.kvs = []          # (key, type, elem_type, value)
        self.tensors = []      # (name, ne, type, bytes)

    def add(self, key, value, gtype=None, elem_type=None):
        if isinstance(value, (list, tuple)) and gtype is None:
            gtype = GGUF_ARRAY
        if gtype is None:
            gtype = _infer_type(value)
        if gtype == GGUF_ARRAY and elem_type is None:
            elem_type = _infer_type(value[0]) if len(value) else GGUF_INT32
        if any(k == key for k, _, _, _ in self.kvs):
            raise GGUFError("duplicate key " + key)
        self.kvs.append((key, gtype, elem_type, value))

    def add_tensor(self, name, data, ggml_type, ne):
        ne = [int(d) for d in ne]
        raw = data.tobytes() if isinstance(data, np.ndarray) else bytes(data)
        if len(raw) != ggml_nbytes(ggml_type, ne):
            raise GGUFError("tensor %s: %d bytes given, %d expected for %s %s"
                            % (name, len(raw), ggml_nbytes(ggml_type, ne), GGML_TYPES[ggml_type][0], ne))
        if len(name.encode()) > MAX_NAME:
            raise GGUFError("tensor name too long: " + name)
        self.tensors.append((name, ne, ggml_type, raw))

    def _kv_bytes(self, kvs):
        out = []
        for key, t, et, v in kvs:
            out.append(_pack_string(key))
            out.append(struct.pack("<i", t))
            if t == GGUF_ARRAY:
                out.append(struct.pack("<iQ", et, len(v)))
                if et == GGUF_STRING:
                    out.extend(_pack_string(s) for s in v)
                else:
                    out.append(np.asarray(v, dtype=_NUMPY_DTYPE[et]).tobytes())
            else:
                out.append(_pack_scalar(t, v))
        return b"".join(out)

    def _write_file(self, path, kvs, tensors):
        a = self.alignment
        head = [GGUF_MAGIC, struct.pack("<Iqq", 3, len(tensors), len(kvs)), self._kv_bytes(kvs)]
        off = 0
        for name, ne, t, raw in tensors:
            head.append(_pack_string(name))
            head.append(struct.pack("<I", len(ne)))
            head.append(struct.pack("<%dq" % len(ne), *ne))
            head.append(struct.pack("<iQ", t, off))
            off += pad_to(len(raw), a)
        hb = b"".join(head)
        with open(path, "wb") as fh:
            fh.write(hb)
            if tensors:
                fh.write(b"\0" * (pad_to(len(hb), a) - len(hb)))
            for _, _, _, raw in tensors:
                fh.write(raw)
                fh.write(b"\0" * (pad_to(len(raw), a) - len(raw)))

    def write(self, path=None):
        self._write_file(path or self.path, self.kvs, self.tensors)

    def write_split(self, prefix, n_shards):
        """gguf-split style shards <prefix>-%05d-of-%05d.gguf; tensors spread evenly in order.
        Returns the list of paths (first shard first)."""
        n = len(self.tensors)
        if n_shards < 1 or n_shards > max(n, 1):
            raise GGUFError("cannot split %d tensors into %d shards" % (n, n_shards))
        bounds = [round(i * n / n_shards) for i in range(n_shards + 1)]
        paths = []
        for i in range(n_shards):
            split_kv = [("split.no", GGUF_UINT16, None, i), ("split.count", GGUF_UINT16, None, n_shards),
                        ("split.tensors.count", GGUF_INT32, None, n)]
            kvs = (self.kvs + split_kv) if i == 0 else split_kv
            p = "%s-%05d-of-%05d.gguf" % (prefix, i + 1, n_shards)
            self._write_file(p, kvs, self.tensors[bounds[i]:bounds[i + 1]])
            paths.append(p)
        return paths


def _fmt_value(v, limit=8):
    if isinstance(v, list):
        s = ", ".join(repr(x) for x in v[:limit])
        return "[%s%s] (%d)" % (s, ", ..." if len(v) > limit else "", len(v))
    return repr(v)


def main(argv=None):
    import argparse
    ap = argparse.ArgumentParser(description="dump a GGUF file's metadata and tensor infos")
    ap.add_argument("path")
    args = ap.parse_args(argv)
    m = GGUFModel(args.path)
    for k, v in m.kv.items():
        t, et = m.kv_type[k]
        tn = GGUF_TYPE_NAMES[t] + ("<%s>" % GGUF_TYPE_NAMES[et] if et is not None else "")
        print("kv %s : %s = %s" % (k, tn, _fmt_value(v)))
    for name, ti in m.tensors.items():
        print("tensor %s ne=%s %s nbytes=%d (%s)" % (name, ti.ne, ti.type_name, ti.nbytes,
                                                   os.path.basename(ti.path)))


if __name__ == "__main__":
    main()
