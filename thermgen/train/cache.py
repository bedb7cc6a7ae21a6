"""Tensors on disk for the UNet stage's training cache: written as they are encoded, read a batch at a time.

The cache (latents and text states of the whole training set) grows with the dataset; no process holds it whole:

- :class:`RowStore` hands the encoders :class:`FileTensor` outputs, raw files that each batch is written into as
  soon as it is encoded (``pwrite``), so the encoding process never holds the set's latents or text states;
- :func:`write_safetensors` assembles them (or in-memory tensors) into one safetensors file, a chunk at a time;
- :func:`open_safetensors` gives that file's tensors as read-only :class:`FileTensor` views, whose rows a training
  step reads with ``pread``: the training process holds one batch, not the cache, and the rows come from the OS
  page cache, which the kernel shares between processes and may reclaim (a memory map would count every page a
  run touches in the process's resident memory: the whole cache after an epoch).

The file format is safetensors' own (``safetensors.torch.load_file`` reads what :func:`write_safetensors`
writes; tested); no pickle is involved.
"""
from __future__ import annotations

import json
import math
import os
import struct
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
                      "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
                      "U8": torch.uint8, "BOOL": torch.bool}

#: Bytes per read or write when a whole tensor is streamed (write_safetensors, FileTensor.chunks).
CHUNK_BYTES = 16 * 2**20


class FileTensor:
    """A C-contiguous tensor stored at ``offset`` in a file, read and written by rows (``pread``/``pwrite``).

    Indexing reads only the rows asked for and returns an ordinary tensor: ``t[i]`` (an int), ``t[idx]`` (a 1-D
    integer tensor or list: rows ``idx``), ``t[a, b]`` (integer tensors of one length over the first two
    dimensions, as torch's advanced indexing does), ``t[s:e]`` (a contiguous row range). Assigning a tensor to a
    row range (``t[s:e] = x``) writes it to the file (writable tensors only). :meth:`reshape` gives a view of the
    same bytes in another shape. Index tensors are read as flat lists of indices (one dimension each)."""

    def __init__(self, path: str | Path, shape, dtype: torch.dtype, offset: int = 0, *, writable: bool = False):
        self.path = Path(path)
        self.shape = torch.Size(shape)
        self.dtype = dtype
        self.offset = int(offset)
        self.writable = writable
        self._itemsize = torch.empty((), dtype=dtype).element_size()
        self._fd: int | None = None
        self._pid: int | None = None

    # -- tensor-like metadata ---------------------------------------------------------------------------------
    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def numel(self) -> int:
        return math.prod(self.shape)

    def element_size(self) -> int:
        return self._itemsize

    @property
    def nbytes(self) -> int:
        return self.numel() * self._itemsize

    def __repr__(self) -> str:
        return f"FileTensor({str(self.path)!r}, shape={tuple(self.shape)}, dtype={self.dtype}, offset={self.offset})"

    def reshape(self, *shape) -> "FileTensor":
        shape = tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list, torch.Size)) else shape
        if -1 in shape:
            known = math.prod(d for d in shape if d != -1)
            if not known:
                raise ValueError(f"FileTensor.reshape: cannot infer -1 in {tuple(shape)}")
            shape = tuple(self.numel() // known if d == -1 else d for d in shape)
        if math.prod(shape) != self.numel():
            raise ValueError(f"FileTensor.reshape: shape {tuple(shape)} does not hold {self.numel()} elements")
        return FileTensor(self.path, shape, self.dtype, self.offset, writable=self.writable)

    # -- I/O ----------------------------------------------------------------------------------------------------
    def _file(self) -> int:
        if self._fd is None or self._pid != os.getpid():  # a forked child opens its own descriptor
            self._fd = os.open(self.path, os.O_RDWR if self.writable else os.O_RDONLY)
            self._pid = os.getpid()
        return self._fd

    def close(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)
        self._fd = None

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown
            pass

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k not in ("_fd", "_pid")} | {"_fd": None, "_pid": None}

    def _row_bytes(self, lead: int = 1) -> int:
        return math.prod(self.shape[lead:]) * self._itemsize

    def _pread(self, n: int, at: int) -> bytes:
        parts, got = [], 0
        while got < n:  # one read returns at most ~2 GiB on Linux, and may return less
            part = os.pread(self._file(), min(n - got, 1 << 30), self.offset + at + got)
            if not part:
                raise OSError(f"{self.path}: read {got} of {n} bytes at offset {self.offset + at} (file truncated?)")
            parts.append(part)
            got += len(part)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _pwrite(self, data: memoryview, at: int) -> None:
        done = 0
        while done < len(data):  # a write may store fewer bytes than asked (a full disk raises)
            done += os.pwrite(self._file(), data[done:], self.offset + at + done)

    def rows(self, start: int, stop: int) -> torch.Tensor:
        """Rows ``start:stop`` as a new tensor, in one read."""
        start, stop, _ = slice(start, stop).indices(len(self))
        n = max(stop - start, 0)
        rb = self._row_bytes()
        if n == 0 or rb == 0:
            return torch.empty((n, *self.shape[1:]), dtype=self.dtype)
        buf = bytearray(self._pread(n * rb, start * rb))
        return torch.frombuffer(buf, dtype=self.dtype).reshape(n, *self.shape[1:])

    def chunks(self, max_bytes: int = CHUNK_BYTES) -> Iterator[torch.Tensor]:
        """The whole tensor as consecutive row blocks of at most ``max_bytes`` (one row at least; a 0-d tensor
        whole)."""
        if not self.ndim:
            yield self._scalar()
            return
        step = max(1, max_bytes // max(self._row_bytes(), 1))
        for s in range(0, len(self), step):
            yield self.rows(s, s + step)

    def __getitem__(self, key) -> torch.Tensor:
        if not self.ndim:
            raise IndexError("FileTensor: a 0-d tensor has no rows")
        if isinstance(key, slice):
            if key.step not in (None, 1):
                raise IndexError("FileTensor: only contiguous row slices are supported")
            return self.rows(*key.indices(len(self))[:2])
        keys = key if isinstance(key, tuple) else (key,)
        if not 0 < len(keys) <= self.ndim:
            raise IndexError(f"FileTensor: {len(keys)} indices for a {self.ndim}-d tensor")
        scalar = all(isinstance(k, (int, np.integer)) or (isinstance(k, (torch.Tensor, np.ndarray)) and k.ndim == 0)
                     for k in keys)
        cols = []
        for k, size in zip(keys, self.shape):
            if isinstance(k, slice):
                raise IndexError("FileTensor: a slice is supported alone (t[s:e]), not inside an index tuple")
            c = torch.as_tensor(k, dtype=torch.long if isinstance(k, (list, tuple)) and not k else None).reshape(-1)
            if c.dtype == torch.bool or c.is_floating_point():
                raise IndexError(f"FileTensor: indices must be integers, got {c.dtype}")
            c = c.long()
            if len(c) and (c.min() < -size or c.max() >= size):
                raise IndexError(f"FileTensor: index out of range for dimension of size {size}")
            cols.append(torch.where(c < 0, c + size, c))
        n = max(len(c) for c in cols)
        if any(len(c) not in (1, n) for c in cols):
            raise IndexError(f"FileTensor: index tensors of lengths {[len(c) for c in cols]} do not broadcast")
        flat = torch.zeros(n, dtype=torch.long)
        for c, size in zip(cols, self.shape):
            flat = flat * size + c.expand(n)
        rb = self._row_bytes(len(cols))
        rest = self.shape[len(cols):]
        buf = bytearray(n * rb)
        if rb:
            for j, r in enumerate(flat.tolist()):
                buf[j * rb:(j + 1) * rb] = self._pread(rb, r * rb)
        out = (torch.frombuffer(buf, dtype=self.dtype) if len(buf) else torch.empty(0, dtype=self.dtype)).reshape(n, *rest)
        return out[0] if scalar else out

    def __setitem__(self, key, value) -> None:
        if not self.writable:
            raise ValueError(f"{self!r} is read-only")
        if not isinstance(key, slice) or key.step not in (None, 1):
            raise IndexError("FileTensor: only a contiguous row range can be written (t[s:e] = x)")
        start, stop, _ = key.indices(len(self))
        value = torch.as_tensor(value)
        want = (max(stop - start, 0), *self.shape[1:])
        if tuple(value.shape) != want:
            raise ValueError(f"FileTensor: cannot write shape {tuple(value.shape)} into rows {start}:{stop} ({want})")
        data = value.detach().to("cpu", self.dtype).contiguous()
        if data.numel():
            self._pwrite(memoryview(data.reshape(-1).view(torch.uint8).numpy()), start * self._row_bytes())

    def load(self) -> torch.Tensor:
        """The whole tensor in memory."""
        return self.rows(0, len(self)) if self.ndim else self._scalar()

    def _scalar(self) -> torch.Tensor:
        return torch.frombuffer(bytearray(self._pread(self._itemsize, 0)), dtype=self.dtype).reshape(())

    def std(self) -> float:
        """The standard deviation of every element (unbiased, as ``torch.std``), accumulated in float64 a chunk at a
        time."""
        s = ss = 0.0
        for c in self.chunks():
            c = c.double()
            s += float(c.sum())
            ss += float((c * c).sum())
        n = self.numel()
        if n < 2:
            return float("nan")
        return math.sqrt(max(ss - s * s / n, 0.0) / (n - 1))


class RowStore:
    """Allocates writable :class:`FileTensor` s as raw files in a temporary folder under ``parent``, the encoders'
    outputs (``alloc(shape, dtype)``). The files are removed by :meth:`cleanup` (or with the ``with`` block)."""

    def __init__(self, parent: str | Path):
        Path(parent).mkdir(parents=True, exist_ok=True)
        self.folder = Path(tempfile.mkdtemp(prefix="rows-", dir=parent))
        self._n = 0

    def __call__(self, shape, dtype: torch.dtype = torch.float32) -> FileTensor:
        path = self.folder / f"{self._n:03d}.bin"
        self._n += 1
        t = FileTensor(path, shape, dtype, writable=True)
        with open(path, "wb") as f:
            f.truncate(t.nbytes)
        return t

    def cleanup(self) -> None:
        import shutil

        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> "RowStore":
        return self

    def __exit__(self, *exc) -> None:
        self.cleanup()


def empty_tensor(shape, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The in-memory allocator (``alloc`` default of the encoders)."""
    return torch.empty(shape, dtype=dtype)


def write_safetensors(tensors: dict, path: str | Path) -> Path:
    """A safetensors file written one tensor at a time, so that saving needs no second copy of the data
    (``safetensors.torch.save_file`` turns every tensor into bytes first: twice the cache in memory). Values are
    tensors or :class:`FileTensor` s, which are copied a chunk at a time.
    The same format: an 8-byte little-endian header length, a JSON header padded with spaces to 8 bytes, then the
    tensors' bytes in header order; read back by ``safetensors.torch.load_file`` and :func:`open_safetensors` (tested)."""
    names = {v: k for k, v in SAFETENSORS_DTYPES.items()}
    header, at, order = {}, 0, []
    # widest elements first (then by name), as safetensors orders them, so that every tensor starts at an offset
    # aligned to its element size (safetensors' readers view the data in place)
    for key, t in sorted(tensors.items(), key=lambda kv: (-kv[1].element_size(), kv[0])):
        if t.dtype not in names:
            raise ValueError(f"write_safetensors: tensor {key!r} has dtype {t.dtype}, which safetensors cannot store")
        if not isinstance(t, FileTensor):
            t = t.detach().cpu().contiguous()
        n = t.numel() * t.element_size()
        header[key] = {"dtype": names[t.dtype], "shape": list(t.shape), "data_offsets": [at, at + n]}
        order.append(t)
        at += n
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for t in order:
            if not t.numel():
                continue
            for c in (t.chunks() if isinstance(t, FileTensor) else [t]):
                f.write(memoryview(c.contiguous().reshape(-1).view(torch.uint8).numpy()))
    return Path(path)


def read_safetensors_header(path: str | Path) -> tuple[int, list[tuple[str, torch.dtype, list[int], int, int]]]:
    """A safetensors file's data start and its entries ``(key, dtype, shape, start, end)``, checked as strictly as
    safetensors does (a JSON object of entries with a known dtype, an int shape and offsets that tile the data
    region in order); a bad header raises ``ValueError`` naming the file and the tensor."""
    path = Path(path)
    size = path.stat().st_size

    def bad(why: str) -> ValueError:
        return ValueError(f"{path}: not a valid safetensors file: {why}")

    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise bad("shorter than its 8-byte header length")
        (hlen,) = struct.unpack("<Q", head)
        if hlen > min(size - 8, 100 * 2**20):
            raise bad(f"header length {hlen} beyond the file's {size} bytes or the 100 MB that safetensors allows")
        try:
            header = json.loads(f.read(hlen))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise bad(f"header is not JSON ({e})") from None
    if not isinstance(header, dict):
        raise bad("header is not a JSON object")
    base, entries = 8 + hlen, []
    for key, info in header.items():
        if key == "__metadata__":
            continue
        ok = (isinstance(info, dict) and isinstance(info.get("shape"), list)
              and all(isinstance(d, int) and d >= 0 for d in info["shape"])
              and isinstance(info.get("data_offsets"), list) and len(info["data_offsets"]) == 2
              and all(isinstance(o, int) for o in info["data_offsets"]))
        if not ok:
            raise bad(f"tensor {key!r}: entry {info!r} lacks an int 'shape' or two int 'data_offsets'")
        dtype = SAFETENSORS_DTYPES.get(info.get("dtype"))
        if dtype is None:
            raise bad(f"tensor {key!r}: dtype {info.get('dtype')!r} is not supported")
        shape, (start, end) = info["shape"], info["data_offsets"]
        if end - start != math.prod(shape) * torch.empty((), dtype=dtype).element_size() or start < 0 or base + end > size:
            raise bad(f"tensor {key!r}: data_offsets {[start, end]} do not hold shape {shape} {info['dtype']} "
                      f"inside the file's {size} bytes")
        entries.append((key, dtype, shape, start, end))
    at = 0
    for key, _, _, start, end in sorted(entries, key=lambda e: (e[3], e[4])):
        if start != at:
            raise bad(f"tensor {key!r}: data_offsets start at {start}, not at {at} where the previous tensor ends "
                      "(tensors overlap or leave a gap)")
        at = end
    if base + at != size:
        raise bad(f"the tensors end at byte {base + at} but the file has {size}")
    return base, entries


def open_safetensors(path: str | Path) -> dict[str, FileTensor]:
    """The tensors of a safetensors file as read-only :class:`FileTensor` views: nothing is read until rows are
    asked for, and then only those rows (checked like :func:`read_safetensors_header`)."""
    base, entries = read_safetensors_header(path)
    return {key: FileTensor(path, shape, dtype, base + start) for key, dtype, shape, start, _ in entries}
