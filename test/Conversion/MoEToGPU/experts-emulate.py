#!/usr/bin/env python3
"""Executes the expert kernels of convert-moe-experts-to-gpu, without a GPU.

usage: experts-emulate.py MOE_OPT [--seed S] [--only SUBSTRING] [--skip SUBSTRING]
                          [--swap A B]... [--mutate OLD NEW]...

For each case (shape, dtype, activation, combine mode, T) it writes a
function with one moe.experts (and a moe.combine for the fused modes), runs
`moe-opt --convert-moe-experts-to-gpu="combine=..." --mlir-print-op-generic`,
interprets the host function's buffer set-up (tensor.dim, index arithmetic,
to_buffer, alloc, cast) and then the launch declaration's `moe.expert_kernels`
list: each launch runs its gpu.func on grid (dim 0 of the named call operand,
y) x (threads, 1, 1), blocks one after another in a shuffled order, and
compares the function's result with a reference of MOE_SEMANTICS §3 experts
and §2 combine computed in double from the same (rounded) inputs.

--mutate replaces OLD by NEW in the generated IR, --mutate-re does so with a
Python regular expression, --swap exchanges A and B (the test's own check
that a wrong kernel is caught).

The machine model (PTX ISA 9.0 section titles; the IR op -> PTX instruction
mapping is the one the NVVM lowering produces):

* Threads, warps, blocks ("Programming Model", "Thread Hierarchy"): a block's
  threads are warps of 32 lanes executed in lockstep, op by op over lists of
  lane values, with per-lane masks for divergent scf.if and per-lane trip
  counts for scf.for (lane-varying bounds diverge like SIMT). Warps of a block
  run one after another (in a shuffled order) up to the next gpu.barrier
  (bar.sync: "Parallel Synchronization and Communication Instructions:
  bar, barrier"); a barrier must be reached by every warp of the block with
  all 32 lanes active, else it is an error. Blocks of a grid run one after
  another, in a shuffled order.
* State spaces ("State Spaces": .global vs .shared): kernel arguments are
  global buffers; workgroup attributions are per-block shared buffers, fresh
  (uninitialised) for every block. Scratch buffers from memref.alloc start
  uninitialised. Reading an uninitialised element is an error, as is any
  index out of a memref's bounds.
* Races ("Memory Consistency Model"): every element access is recorded with
  (block, barrier interval, thread). Two accesses to one element, at least
  one a plain write, conflict when they come from different blocks of one
  launch, or from different threads of one block in the same barrier
  interval (no bar.sync between them orders them; lanes of one warp are
  distinct threads: sm_70+ independent thread scheduling). Atomics do not
  conflict with atomics. Launches are ordered (one stream).
* cp.async ("Data Movement and Conversion Instructions: cp.async",
  "cp.async.commit_group", "cp.async.wait_group"): nvgpu.device_async_copy is
  a 16-byte cp.async.cg: source and destination 16-byte aligned, source
  elements past `srcElements` (when given) are zeros (the src-size form).
  The copy is pending in its thread until a commit puts it in a group;
  `wait.group N` completes all of the thread's groups but the newest N. A
  destination element is "in flight" from issue to completion: any read or
  write of it before then (by any thread, its issuer included) is an error;
  the write is recorded for the race check both at issue and at completion,
  so a reader in another thread also needs a barrier after the issuer's wait.
* ldmatrix ("Warp-level matrix load instruction: ldmatrix"): .x1/.x2/.x4 read
  8/16/32 rows of 8 16-bit elements; row r of matrix i is at the address of
  lane 8i+r (other lanes' addresses are unused), each row 16-byte aligned and
  inside one row of the shared memref; lane l receives in register i the
  elements (row l/4, columns 2(l%4), 2(l%4)+1) of matrix i, or with .trans
  (rows 2(l%4), 2(l%4)+1, column l/4). All 32 lanes must be active.
* mma.sync.aligned.m16n8k16.row.col.f32.{bf16,f16}.{bf16,f16}.f32
  ("Matrix Fragments for mma.m16n8k16 with floating point type"): with
  g = lane/4, t = lane%4, A registers 0..3 hold (row g, cols 2t,2t+1),
  (row g+8, cols 2t..), (row g, cols 2t+8..), (row g+8, cols 2t+8..); B
  registers 0..1 hold (rows 2t,2t+1 | 2t+8,2t+9; col g); C/D 0..3 are
  (row g, cols 2t, 2t+1), (row g+8, cols 2t, 2t+1). The warp's 16x16 A,
  16x8 B and C are assembled from the 32 lanes, D = A*B + C is computed with
  exact products and a double sum, rounded to f32 once per element (the
  hardware's internal accumulation order/precision is not modelled), and
  scattered back. A 32-bit register from llvm.bitcast of vector<2xbf16>
  keeps element 0 in its low half. All 32 lanes must be active. Also
  m16n8k8 .tf32 (the f32 experts), its A/B registers one tf32 value each
  at the positions the PTX ISA gives (see `mma`); an operand with any of
  its low 13 bits set is an error. ldmatrix of 32-bit elements: rows of 4,
  lane l gets (row l/4, column l%4) of each matrix.
* wgmma ("Asynchronous Warpgroup Level Matrix Multiply-Accumulate
  Instructions", "Matrix Descriptor", the canonical layouts): an
  nvvm.wgmma.mma_async m64nNk16 f32 += bf16/f16 with both operands
  K-major in shared memory runs per warp (each warp of a warpgroup computes
  its 16 rows; all four must issue the same descriptors, in the same order).
  Descriptor bits 0-13 are the shared address >> 4 (shared addresses: the
  block's static buffers back to back from 0, dynamic views at their
  offsets), 16-29 the leading byte offset >> 4, 32-45 the stride byte
  offset >> 4, swizzle and base offset must be 0; element (r, k) is at
  start + (r / 8) SBO + (k / 8) LBO + (r % 8) 16 + (k % 8) 2 bytes. Lane l
  gets accumulator i at row l/4 + 8((i/2)%2), column 8(i/4) + 2(l%4) + i%2
  of its warp's 16 rows. The instruction is asynchronous: it needs a
  wgmma.fence since the warp's last wait; the shared memory it reads must
  not hold generic-proxy writes (stores, completed cp.async) whose thread
  has not executed fence.proxy.async since ("Async Proxy"); its shared
  reads are pending
  until a wait_group completes its commit group (a store or cp.async to
  them before then is an error) and its result may not be read
  (extractvalue) before that; a block must end with none pending.
* Arithmetic: f32 ops rounded to f32 after each op; exp/erf/tanh/rsqrt correctly
  rounded from double (libdevice's few-ulp error is not modelled);
  arith.truncf to bf16/f16 rounds to nearest even (cvt.rn); integers wrap
  at their width.
* Atomics ("Parallel Synchronization and Communication Instructions: atom",
  "red"): memref.atomic_rmw addi on shared/global and llvm.atomicrmw fadd
  (atom.global.add.f32) on a global pointer (extract_aligned_pointer ->
  inttoptr -> getelementptr: byte addresses into the emulated buffers) are
  applied one lane at a time, lanes in a shuffled order, f32 rounding per add
  (so the K-term order varies like on the device).

* TMA ("cp.async.bulk.tensor", "mbarrier"; tma=1): tensor maps come from
  the launch list (`tensor_maps`: buffer, box, data type, swizzle); a 3-d
  tile-mode copy reads its box at the coordinates (innermost first; a box
  outside the tensor is an error) and writes it from the destination
  address, 128-byte swizzled on absolute shared addresses from a 1024-byte
  aligned start; it completes its bytes on the mbarrier at issue. mbarrier
  init / arrive.expect_tx / try_wait.parity are modelled with arrival and
  transaction counts and phases; a phase completes when both reach zero. A
  thread (for a wgmma: each thread of the warp) may read the copy's bytes
  only after a try_wait.parity of its own saw that phase complete; a wait
  for the incomplete phase's parity would never return (an error).

Not modelled: the PTX/SASS the NVVM lowering produces from this IR, memory
ordering weaker than "a barrier orders everything" (no fences are needed by
these kernels within a block; across launches the stream orders them), bank
conflicts, timing, the hardware's accumulation order inside one mma.

Prints one line per case and `experts-emulate: N cases passed, M failed`.
"""

import bisect
import importlib.util
import math
import os
import random
import re
import struct
import subprocess
import sys

_spec = importlib.util.spec_from_file_location(
    "route_emulate", os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                  "route-emulate.py"))
RE = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(RE)
f32, bf16r, cmpi, cmpf, CMPI, CMPF, wrap, unsigned, parse_ops = (
    RE.f32, RE.bf16, RE.cmpi, RE.cmpf, RE.CMPI, RE.CMPF, RE.wrap, RE.unsigned,
    RE.parse_ops)

LANES = 32


class EmuError(Exception):
    pass


def f16r(x):
    if math.isnan(x) or math.isinf(x):
        return x
    try:
        return struct.unpack("<e", struct.pack("<e", x))[0]
    except OverflowError:
        return math.copysign(math.inf, x)


def round_to(x, ty):
    if ty == "bf16":
        return bf16r(f32(x)) if not (math.isnan(x) or math.isinf(x)) else x
    if ty == "f16":
        return f16r(f32(x))
    if ty == "f32":
        return f32(x)
    raise EmuError("round to " + ty)


def f32_bits(x):
    """The bits of f32 x as a signed 32-bit integer."""
    return wrap(struct.unpack("<I", struct.pack("<f", x))[0], 32)


def bits_f32(b):
    return struct.unpack("<f", struct.pack("<I", unsigned(b, 32)))[0]


def tf32_rna(x):
    b = unsigned(f32_bits(x), 32)
    if not (math.isinf(x) or math.isnan(x)):
        b += 0x1000
    return wrap(b & 0xFFFFE000, 32)


def fexp(x):
    try:
        return f32(math.exp(x))
    except OverflowError:
        return math.inf


def fdiv(a, b):
    return RE.fdiv(a, b)


ELEM_BYTES = {"bf16": 2, "f16": 2, "f32": 4, "i32": 4, "i64": 8}

# ---------------------------------------------------------------------------
# Types
# ---------------------------------------------------------------------------


def split_top(s):
    out, depth, cur = [], 0, ""
    for ch in s:
        if ch in "<([{":
            depth += 1
        elif ch in ">)]}":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip():
        out.append(cur.strip())
    return out


def signature(rest):
    i = rest.rfind(" : (")
    if i < 0:
        return [], []
    sig = rest[i + 3:]
    depth = 0
    for j, ch in enumerate(sig):
        if ch in "<([{":
            depth += 1
        elif ch in ">)]}":
            depth -= 1
            if depth == 0:
                break
    ins = split_top(sig[1:j])
    outs = sig[j + 1:].strip()
    assert outs.startswith("->"), rest
    outs = outs[2:].strip()
    if outs.startswith("(") and not outs.startswith("(f32"):
        outs = outs[1:-1]
    return ins, split_top(outs)


def memref_type(t):
    m = re.fullmatch(r"memref<([^,>]*?)(?:, (.*))?>", t)
    if not m:
        return None
    parts = m.group(1).split("x")
    shape = [None if p == "?" else int(p) for p in parts[:-1]]
    shared = m.group(2) is not None and "workgroup" in m.group(2)
    return shape, parts[-1], shared


# ---------------------------------------------------------------------------
# Memory
# ---------------------------------------------------------------------------


class Buf:
    next_addr = 1 << 20

    def __init__(self, name, shape, dtype, shared=False, data=None):
        self.name, self.shape, self.dtype, self.shared = name, list(shape), dtype, shared
        n = 1
        for d in shape:
            n *= d
        self.size = n
        self.data = data if data is not None else [None] * n
        assert len(self.data) == n
        self.strides = []
        s = 1
        for d in reversed(shape):
            self.strides.insert(0, s)
            s *= d
        self.esize = ELEM_BYTES[dtype]
        # A byte address, 256-aligned (like cudaMalloc / llvm.align 16 for
        # shared), also the key space of the race tracker.
        self.addr = Buf.next_addr
        Buf.next_addr += (n * self.esize + 255) // 256 * 256 + 256

    def view(self, shape):
        v = Buf.__new__(Buf)
        v.__dict__.update(self.__dict__)
        v.shape = list(shape)
        n, v.strides = 1, []
        for d in reversed(shape):
            v.strides.insert(0, n)
            n *= d
        if n != self.size:
            raise EmuError("reshape of %s to %s" % (self.shape, shape))
        return v

    def flat(self, idx):
        if len(idx) != len(self.shape):
            raise EmuError("rank mismatch on %s" % self.name)
        f = 0
        for i, d, s in zip(idx, self.shape, self.strides):
            if not 0 <= i < d:
                raise EmuError("index %s out of bounds of %s%s" %
                               (list(idx), self.name, self.shape))
            f += i * s
        return f


class Tracker:
    """Race detector over element keys (buffer address + element)."""

    def __init__(self):
        self.w, self.r, self.a = {}, {}, {}

    @staticmethod
    def _conf(rec, who):
        if rec is None:
            return False
        b, p, t = rec
        if b != who[0] or b == -1:
            return True
        return p == who[1] and t != who[2]

    @staticmethod
    def _merge(rec, who):
        if rec is None:
            return who
        b, p, t = rec
        if b != who[0]:
            return (-1, -1, -1)
        if p != who[1]:
            return who
        return who if t == who[2] else (b, p, -1)

    def read(self, key, who, what):
        if self._conf(self.w.get(key), who) or self._conf(self.a.get(key), who):
            raise EmuError("race: %s read by block %s thread %d conflicts with a "
                           "write/atomic not ordered before it" %
                           (what, who[0], who[2]))
        self.r[key] = self._merge(self.r.get(key), who)

    def write(self, key, who, what):
        if (self._conf(self.w.get(key), who) or self._conf(self.r.get(key), who)
                or self._conf(self.a.get(key), who)):
            raise EmuError("race: %s written by block %s thread %d conflicts "
                           "with an access not ordered with it" %
                           (what, who[0], who[2]))
        self.w[key] = who

    def atomic(self, key, who, what):
        if self._conf(self.w.get(key), who) or self._conf(self.r.get(key), who):
            raise EmuError("race: atomic on %s by block %s thread %d conflicts "
                           "with a plain access" % (what, who[0], who[2]))
        self.a[key] = self._merge(self.a.get(key), who)


# ---------------------------------------------------------------------------
# Kernel execution
# ---------------------------------------------------------------------------


def op_info(op):
    if not hasattr(op, "ins_t"):
        op.ins_t, op.outs_t = signature(op.rest)
    return op


def attr_int(op, key):
    m = re.search(key + r" = (-?\d+)", op.rest)
    return int(m.group(1)) if m else None


def attr_array(op, key):
    m = re.search(key + r" = array<i\d+(?:: ([-\d, ]*))?>", op.rest)
    return [int(v) for v in m.group(1).split(",")] if m and m.group(1) else []


def parse_const(op):
    if hasattr(op, "cval"):
        return op.cval
    m = re.search(r"value = (.*?) : ([\w<>x]+)\}>", op.rest)
    if not m:
        m2 = re.search(r"value = (true|false)", op.rest)
        op.cval = m2.group(1) == "true"
        return op.cval
    lit, ty = m.group(1), m.group(2)
    vm = re.fullmatch(r"dense<(.*)>", lit)
    if vm:
        v = float(vm.group(1)) if "f" in ty else int(vm.group(1))
        n = int(re.search(r"vector<(\d+)x", ty).group(1))
        op.cval = tuple([f32(v) if "f" in ty else v] * n)
    elif ty == "f64":
        op.cval = struct.unpack("<d", struct.pack("<Q", int(lit, 16)))[0] \
            if lit.startswith("0x") else float(lit)
    elif ty in ("f32", "bf16", "f16"):
        if lit.startswith("0x"):
            bits = int(lit, 16)
            v = struct.unpack("<f", struct.pack("<I", bits))[0] if ty == "f32" \
                else (struct.unpack("<e", struct.pack("<H", bits))[0] if ty == "f16"
                      else struct.unpack("<f", struct.pack("<I", bits << 16))[0])
        else:
            v = round_to(float(lit), ty)
        op.cval = v
    else:
        op.cval = int(lit)
    return op.cval


def elt(ty):
    m = re.fullmatch(r"vector<(?:\d+x)*(\w+)>", ty)
    return m.group(1) if m else ty


def intw(ty):
    e = elt(ty)
    if e == "index":
        return 64
    m = re.fullmatch(r"i(\d+)", e)
    return int(m.group(1)) if m else None


def vmap(f, *xs):
    if isinstance(xs[0], tuple):
        return tuple(vmap(f, *ys) for ys in zip(*xs))
    return f(*xs)


class BlockState:
    def __init__(self, launch, bid, shared):
        self.launch, self.bid, self.shared = launch, bid, shared
        self.phase = 0
        self.inflight = {}      # shared element key -> issuing thread
        self.pending = {}       # tid -> [copies not yet committed]
        self.groups = {}        # tid -> [groups (lists of copies)], oldest first
        self.views = {}         # (byte offset, shape, dtype) -> Buf
        # Addresses in the block's shared window (what a wgmma descriptor
        # holds): static buffers back to back from 0 (16-byte aligned), a
        # dynamic view at its byte offset.
        self.window = []        # (shared address, Buf)
        at = 0
        for b in shared:
            self.window.append((at, b))
            at += (b.size * b.esize + 15) // 16 * 16
        self.wgmma_reads = {}   # shared element key -> count of pending wgmma reads
        # Shared elements written through the generic proxy (stores, cp.async)
        # whose writer has not executed fence.proxy.async since: key -> thread,
        # and thread -> keys. wgmma (async proxy) may not read them.
        self.unfenced = {}
        self.unfenced_by = {}
        self.wgmma_log = {}     # (warpgroup, n-th wgmma) -> (descA, descB, shape)
        # mbarriers (by shared address): arrival count, arrivals and
        # transaction bytes left in the current phase, phases completed.
        self.mbar = {}
        # Shared elements a TMA wrote: key -> (mbarrier, phase it completes);
        # (thread, mbarrier) -> the last phase whose completion the thread
        # observed (a successful try_wait.parity).
        self.tma_written = {}
        self.observed = {}

    def shared_address(self, buf):
        for a, b in self.window:
            if b is buf:
                return a
        raise EmuError("address of shared %s outside the window" % buf.name)

    def resolve_shared(self, addr, what):
        for a, b in self.window:
            if a <= addr < a + b.size * b.esize:
                off = addr - a
                if off % b.esize:
                    raise EmuError("%s: misaligned shared address %d" % (what, addr))
                return b, off // b.esize
        raise EmuError("%s: shared address %d in no buffer" % (what, addr))

    def dynamic_view(self, offset, shape, dtype):
        """A typed view (memref.view) of the launch's dynamic shared memory:
        16-byte aligned, inside the bytes the launch asked for, and not
        overlapping another view (each is a buffer of its own here, so an
        overlap would hide aliasing). Fresh (uninitialised) per block."""
        key = (offset, tuple(shape), dtype)
        if key not in self.views:
            size = ELEM_BYTES[dtype]
            for d in shape:
                size *= d
            smem = self.launch.smem
            if offset % 16:
                raise EmuError("dynamic shared memory view at byte %d: not "
                               "16-byte aligned" % offset)
            if offset + size > smem:
                raise EmuError("dynamic shared memory view [%d, %d) outside "
                               "the launch's %d bytes" % (offset, offset + size, smem))
            for (o, sh, dt), b in self.views.items():
                end = o + b.size * b.esize
                if offset < end and o < offset + size:
                    raise EmuError("dynamic shared memory views at bytes %d and "
                                   "%d overlap" % (o, offset))
            self.views[key] = Buf("dyn%d" % offset, shape, dtype, shared=True)
            self.window.append((offset, self.views[key]))
        return self.views[key]


class TensorMap:
    """A CUtensorMap as the host made it (a launch list's `tensor_maps`
    entry): the global buffer, the box (outermost first), the data type
    (CUtensorMapDataType: 9 bf16, 6 f16) and the swizzle (3: 128 bytes)."""

    def __init__(self, buf, box, dtype, swizzle):
        self.buf, self.box, self.dtype, self.swizzle = buf, box, dtype, swizzle
        if len(buf.shape) != 3 or buf.shared:
            raise EmuError("tensor map of a buffer that is not a rank-3 global one")
        if {9: "bf16", 6: "f16"}.get(dtype) != buf.dtype:
            raise EmuError("tensor map of data type %d on a %s buffer" % (dtype, buf.dtype))
        if any(not 1 <= b <= 256 for b in box):
            raise EmuError("tensor map box %s" % (box,))


class Launch:
    def __init__(self, emu, kernel, grid, threads, args, smem=0):
        self.emu, self.kernel, self.grid, self.threads = emu, kernel, grid, threads
        self.args, self.smem = args, smem
        self.tracker = Tracker()


class Warp:
    def __init__(self, launch, block, warp):
        self.launch, self.block, self.warp = launch, block, warp
        self.emu = launch.emu
        self.env = {}
        self.tid0 = warp * LANES
        self.rng = self.emu.rng
        # wgmma: fenced since the last wait; this warp's uncommitted and
        # committed (not yet waited for) groups; wgmmas issued so far.
        self.wg_fenced = False
        self.wg_open = []
        self.wg_groups = []
        self.wg_count = 0

    def who(self, lane):
        return (self.block.bid, self.block.phase, self.tid0 + lane)

    # -- memory helpers ------------------------------------------------------

    def load(self, buf, idx, lane, what="load"):
        f = buf.flat(idx)
        key = buf.addr + f * buf.esize
        if buf.shared:
            if key in self.block.inflight:
                raise EmuError("%s of shared %s%s by thread %d before the cp.async "
                               "writing it (thread %d) completed" %
                               (what, buf.name, list(idx), self.tid0 + lane,
                                self.block.inflight[key]))
            self.tma_visible(key, [self.tid0 + lane], what + " of " + buf.name)
            self.block.launch.tracker.read(key, self.who(lane), buf.name)
        else:
            self.launch.tracker.read(key, self.who(lane), buf.name)
        v = buf.data[f]
        if v is None:
            raise EmuError("%s of uninitialised %s%s (thread %d)" %
                           (what, buf.name, list(idx), self.tid0 + lane))
        return v

    def store(self, buf, idx, lane, v):
        f = buf.flat(idx)
        key = buf.addr + f * buf.esize
        if buf.shared and key in self.block.inflight:
            raise EmuError("store to shared %s%s while a cp.async writes it" %
                           (buf.name, list(idx)))
        if buf.shared and key in self.block.wgmma_reads:
            raise EmuError("store to shared %s%s while a wgmma reads it" %
                           (buf.name, list(idx)))
        self.launch.tracker.write(key, self.who(lane), buf.name)
        buf.data[f] = v
        if buf.shared:
            self.block.unfenced[key] = self.tid0 + lane
            self.block.unfenced_by.setdefault(self.tid0 + lane, set()).add(key)

    def tma_visible(self, key, threads, what):
        """A TMA's write of shared `key` is visible to these threads only once
        each has observed the completion of its mbarrier phase
        (mbarrier.try_wait.parity succeeded for it): a read before that reads
        memory the copy may still be writing."""
        w = self.block.tma_written.get(key)
        if w is None:
            return
        bar, phase = w
        for t in threads:
            if self.block.observed.get((t, bar), -1) < phase:
                raise EmuError("%s: thread %d reads shared memory a TMA writes "
                               "before waiting on its mbarrier (phase %d)" %
                               (what, t, phase))

    def mbarrier(self, addr, what):
        if addr % 8:
            raise EmuError("%s: mbarrier at shared address %d, not 8-byte aligned"
                           % (what, addr))
        self.block.resolve_shared(addr, what)
        st = self.block.mbar.get(addr)
        if st is None:
            raise EmuError("%s: mbarrier at %d used before mbarrier.init" % (what, addr))
        return st

    def mbar_update(self, addr, st, arrivals, tx):
        st["arrivals"] -= arrivals
        st["tx"] += tx
        if st["arrivals"] < 0:
            raise EmuError("mbarrier at %d: more arrivals than its count" % addr)
        if st["arrivals"] == 0 and st["tx"] == 0:
            st["phase"] += 1
            st["arrivals"] = st["count"]

    def tma_load(self, op, ins, mask):
        """cp.async.bulk.tensor.3d.shared::cluster.global.tile with
        mbarrier::complete_tx::bytes (PTX ISA, "Data Movement and Conversion
        Instructions: cp.async.bulk.tensor", "Tensor Memory Access"): the box
        at the coordinates (innermost first) of the tensor map's tensor,
        written to shared memory from the destination address, rows of the
        box's inner dimension one after another; with the 128-byte swizzle
        (the inner box exactly 128 bytes here) the 16-byte chunk at address
        bits 4-6 XOR bits 7-9, on absolute shared addresses (the destination
        must be 1024-byte aligned, so that the pattern is the wgmma one).
        The copy completes its bytes on the mbarrier at once; its writes stay
        invisible to every thread until it observes that phase."""
        seg = attr_array(op, "operandSegmentSizes")
        if seg[4:] and any(seg[4:]):
            raise EmuError("cp.async.bulk.tensor with im2col, multicast, cache "
                           "hint or predicate")
        if seg[2] != 3 or "tma_load_mode<tile>" not in op.rest:
            raise EmuError("cp.async.bulk.tensor other than 3-d tile mode")
        active = [l for l in range(LANES) if mask[l]]
        for l in active:
            dst, tmap = ins[0][l], ins[1][l]
            coords = [ins[2 + i][l] for i in range(3)]
            bar = ins[5][l]
            if not isinstance(tmap, TensorMap):
                raise EmuError("cp.async.bulk.tensor without a tensor map")
            st = self.mbarrier(bar, "cp.async.bulk.tensor")
            b0, b1, b2 = tmap.box
            esize = ELEM_BYTES[tmap.buf.dtype]
            if tmap.swizzle == 3:
                if b2 * esize != 128:
                    raise EmuError("128-byte swizzle with a %d-byte inner box" % (b2 * esize))
                if dst % 1024:
                    raise EmuError("128-byte swizzled TMA destination %d not "
                                   "1024-byte aligned" % dst)
            elif tmap.swizzle != 0:
                raise EmuError("tensor map swizzle %d" % tmap.swizzle)
            # coords innermost first: (dim 2, dim 1, dim 0) of the tensor.
            c2, c1, c0 = coords
            shape = tmap.buf.shape
            if not (0 <= c0 and c0 + b0 <= shape[0] and 0 <= c1 and
                    c1 + b1 <= shape[1] and 0 <= c2 and c2 + b2 <= shape[2]):
                raise EmuError("TMA box at %s outside the tensor %s" %
                               ((c0, c1, c2), shape))
            who = self.who(l)
            for i0 in range(b0):
                for i1 in range(b1):
                    for i2 in range(b2):
                        src = [c0 + i0, c1 + i1, c2 + i2]
                        f = tmap.buf.flat(src)
                        self.launch.tracker.read(tmap.buf.addr + f * esize, who,
                                                 tmap.buf.name)
                        v = tmap.buf.data[f]
                        if v is None:
                            raise EmuError("TMA reads uninitialised %s%s" %
                                           (tmap.buf.name, src))
                        lin = dst + ((i0 * b1 + i1) * b2 + i2) * esize
                        addr = lin ^ (((lin >> 7) & 7) << 4) if tmap.swizzle == 3 else lin
                        buf, e = self.block.resolve_shared(addr, "TMA destination")
                        if buf.dtype != tmap.buf.dtype:
                            raise EmuError("TMA writes %s into %s shared memory" %
                                           (tmap.buf.dtype, buf.dtype))
                        key = buf.addr + e * buf.esize
                        if key in self.block.inflight:
                            raise EmuError("TMA writes shared memory a cp.async writes")
                        if key in self.block.wgmma_reads:
                            raise EmuError("TMA writes shared %s while a wgmma reads it"
                                           % buf.name)
                        self.launch.tracker.write(key, who, buf.name)
                        buf.data[e] = v
                        # Completes the phase under way (the arrivals and
                        # transactions left decide when).
                        self.block.tma_written[key] = (bar, st["phase"])
            self.mbar_update(bar, st, 0, -b0 * b1 * b2 * esize)

    # -- execution ------------------------------------------------------------

    def run(self, ops, mask):
        """A generator: yields at every gpu.barrier."""
        for op in ops:
            n = op.name
            if n == "gpu.barrier":
                if not all(mask):
                    raise EmuError("gpu.barrier with inactive lanes")
                yield "barrier"
            elif n == "scf.for":
                yield from self.do_for(op, mask)
            elif n == "scf.if":
                yield from self.do_if(op, mask)
            elif n == "scf.yield":
                self.yielded = [self.env[o] for o in op.operands]
            elif n == "gpu.return":
                if not all(mask):
                    raise EmuError("gpu.return in divergent control flow")
                return
            else:
                self.step(op, mask)

    def do_if(self, op, mask):
        cond = self.env[op.operands[0]]
        res = []
        for k, (args, body) in enumerate(op.regions):
            m = [mk and (bool(c) if k == 0 else not c) for mk, c in zip(mask, cond)]
            self.yielded = None
            if any(m) and body:
                yield from self.run(body, m)
            res.append(self.yielded)
        if op.results:
            t, e = res
            for i, r in enumerate(op.results):
                tv = t[i] if t else None
                ev = e[i] if e else None
                self.env[r] = [(tv[l] if cond[l] else ev[l]) if mask[l] else None
                               for l in range(LANES)]

    def do_for(self, op, mask):
        ins = [self.env[o] for o in op.operands]
        lb, ub, st = ins[0], ins[1], ins[2]
        carried = [list(v) for v in ins[3:]]
        args, body = op.regions[0]
        it = 0
        while True:
            iv = [lb[l] + it * st[l] if mask[l] else 0 for l in range(LANES)]
            act = [mask[l] and iv[l] < ub[l] for l in range(LANES)]
            if not any(act):
                break
            self.env[args[0]] = iv
            for a, v in zip(args[1:], carried):
                self.env[a] = v
            self.yielded = None
            yield from self.run(body, act)
            if carried:
                carried = [[y[l] if act[l] else c[l] for l in range(LANES)]
                           for y, c in zip(self.yielded, carried)]
            it += 1
        for r, v in zip(op.results, carried):
            self.env[r] = v

    def step(self, op, mask):
        n = op.name
        op_info(op)
        env = self.env
        ins = [env[o] for o in op.operands]
        L = range(LANES)
        out_t = op.outs_t[0] if op.outs_t else None

        def setr(v):
            env[op.results[0]] = v

        if n == "arith.constant":
            setr([parse_const(op)] * LANES)
        elif n == "gpu.thread_id":
            d = re.search(r"dim (\w)", op.rest).group(1)
            setr([self.tid0 + l if d == "x" else 0 for l in L])
        elif n == "gpu.block_id":
            d = re.search(r"dim (\w)", op.rest).group(1)
            setr([self.block.bid[{"x": 0, "y": 1}.get(d, 2)] if d != "z" else 0] * LANES)
        elif n == "gpu.grid_dim":
            d = re.search(r"dim (\w)", op.rest).group(1)
            setr([self.launch.grid[{"x": 0, "y": 1}.get(d, 2)] if d != "z" else 1] * LANES)
        elif n == "gpu.block_dim":
            d = re.search(r"dim (\w)", op.rest).group(1)
            setr([self.launch.threads if d == "x" else 1] * LANES)
        elif n in INT_OPS:
            w = intw(out_t)
            f = INT_OPS[n]
            a, b = ins
            setr([wrap(f(x, y, w), w) if m else 0 for x, y, m in zip(a, b, mask)])
        elif n in ("arith.index_cast", "arith.index_castui", "arith.extsi",
                   "arith.extui", "arith.trunci"):
            wi, wo = intw(op.ins_t[0]), intw(out_t)
            if n in ("arith.index_castui", "arith.extui"):
                setr([wrap(unsigned(v, wi), wo) if m else 0
                      for v, m in zip(ins[0], mask)])
            else:
                setr([wrap(v, wo) if m else 0 for v, m in zip(ins[0], mask)])
        elif n == "arith.cmpi":
            pred = CMPI[attr_int(op, "predicate")]
            w = intw(op.ins_t[0])
            setr([cmpi(pred, a, b, w) if m else False
                  for a, b, m in zip(ins[0], ins[1], mask)])
        elif n == "arith.cmpf":
            pred = CMPF[attr_int(op, "predicate")]
            setr([cmpf(pred, a, b) if m else False
                  for a, b, m in zip(ins[0], ins[1], mask)])
        elif n == "arith.select":
            setr([x if c else y for c, x, y in zip(*ins)])
        elif n in F64_OPS and out_t == "f64":
            # Double arithmetic (the admission kernel's capacity): exact
            # IEEE double, no f32 rounding.
            f = F64_OPS[n]
            setr([f(*xs) if m else None for xs, m in zip(zip(*ins), mask)])
        elif n in FLOAT_OPS:
            f = FLOAT_OPS[n]
            setr([vmap(f, *xs) if m else None for xs, m in zip(zip(*ins), mask)])
        elif n == "arith.sitofp":
            wi = intw(op.ins_t[0])
            conv = float if out_t == "f64" else (lambda v: round_to(float(v), out_t))
            setr([conv(wrap(v, wi)) if m else None for v, m in zip(ins[0], mask)])
        elif n == "arith.fptosi":
            # In range here (NaN or out of range: poison in MLIR).
            wo = intw(out_t)

            def fptosi(x):
                if math.isnan(x) or math.isinf(x) or abs(x) >= 2.0 ** (wo - 1):
                    raise EmuError("arith.fptosi of %r to i%d" % (x, wo))
                return int(x)
            setr([fptosi(x) if m else 0 for x, m in zip(ins[0], mask)])
        elif n == "math.ctpop":
            w = intw(out_t)
            setr([bin(unsigned(x, w)).count("1") if m else 0
                  for x, m in zip(ins[0], mask)])
        elif n == "nvvm.match.sync":
            # match.any.sync: each lane gets the lanes of thread_mask with its
            # value; every lane of thread_mask must take part.
            if "match_sync_kind any" not in op.rest:
                raise EmuError("nvvm.match.sync other than any")
            tmask, val = ins
            if len(set(tmask)) != 1:
                raise EmuError("nvvm.match.sync thread masks differ")
            tm = unsigned(tmask[0], 32)
            part = [bool(tm >> l & 1) for l in L]
            if any(p and not m for p, m in zip(part, mask)):
                raise EmuError("nvvm.match.sync: a lane of the thread mask is inactive")
            setr([wrap(sum(1 << j for j in L if part[j] and val[j] == val[l]), 32)
                  if mask[l] else 0 for l in L])
        elif n == "arith.truncf":
            ty = elt(out_t)
            setr([vmap(lambda x: round_to(x, ty), x) if m else None
                  for x, m in zip(ins[0], mask)])
        elif n == "arith.extf":
            setr(list(ins[0]))
        elif n == "arith.bitcast":
            # f32 <-> i32 (the tf32 split of the f32 expert kernels): the
            # same 32 bits; i32 values are kept signed.
            if (op.ins_t[0], out_t) == ("f32", "i32"):
                setr([f32_bits(x) if m else 0 for x, m in zip(ins[0], mask)])
            elif (op.ins_t[0], out_t) == ("i32", "f32"):
                setr([bits_f32(x) if m else None for x, m in zip(ins[0], mask)])
            else:
                raise EmuError("arith.bitcast %s -> %s" % (op.ins_t[0], out_t))
        elif n == "nvvm.convert.float.to.tf32":
            # cvt.rna.tf32.f32 (sm_80 SASS: an integer add of 0x1000 to the
            # bits of a finite value, then the low 13 bits cleared; NaN and
            # infinities only masked): round to nearest, ties away.
            if "rnd = #nvvm.fp_rnd_mode<rna>" not in op.rest or "relu = true" in op.rest \
                    or "sat = #nvvm.sat_mode<satfinite>" in op.rest:
                raise EmuError("cvt to tf32 other than .rna: " + op.rest)
            setr([tf32_rna(x) if m else 0 for x, m in zip(ins[0], mask)])
        elif n == "vector.broadcast":
            k = int(re.search(r"vector<(\d+)x", out_t).group(1))
            setr([tuple([x] * k) for x in ins[0]])
        elif n == "vector.from_elements":
            setr([tuple(xs) for xs in zip(*ins)])
        elif n == "vector.extract":
            pos = attr_array(op, "static_position")
            if len(ins) != 1:
                raise EmuError("dynamic vector.extract")

            def ex(v):
                for p in pos:
                    v = v[p]
                return v
            setr([ex(v) if m else None for v, m in zip(ins[0], mask)])
        elif n == "gpu.shuffle":
            # shfl.sync.bfly/idx with the full mask (the linear kernel's
            # butterflies): every lane must take part.
            if not all(mask):
                raise EmuError("gpu.shuffle with inactive lanes")
            mode = re.search(r"shuffle_mode (\w+)", op.rest).group(1)
            v, off, wd = ins
            if any(x != LANES for x in wd):
                raise EmuError("gpu.shuffle width other than 32")
            src = [l ^ off[l] if mode == "xor" else off[l] for l in L]
            if mode not in ("xor", "idx"):
                raise EmuError("gpu.shuffle mode " + mode)
            ok = [0 <= x < LANES for x in src]
            env[op.results[0]] = [v[x] if o else v[l] for l, x, o in zip(L, src, ok)]
            env[op.results[1]] = ok
        elif n == "llvm.bitcast":
            # vector<2xbf16> <-> i32: the pair stays a pair (element 0 = the
            # low half, little endian), consumed by mma.sync as such.
            setr(list(ins[0]))
        elif n == "llvm.extractvalue":
            p = attr_array(op, "position")[0]
            for v, m in zip(ins[0], mask):
                if m and isinstance(v, WgmmaResult) and not v.done:
                    raise EmuError("wgmma result read before its wait_group")
            setr([v[p] if m else None for v, m in zip(ins[0], mask)])
        elif n == "gpu.dynamic_shared_memory":
            if not self.launch.smem:
                raise EmuError("gpu.dynamic_shared_memory in a launch without "
                               "dynamic shared memory")
            setr(["dynamic-smem"] * LANES)
        elif n == "memref.view":
            if ins[0][0] != "dynamic-smem" or len(ins) != 2:
                raise EmuError("memref.view of other than the dynamic shared "
                               "memory, or with sizes")
            if len(set(ins[1])) != 1:
                raise EmuError("memref.view offset differs between lanes")
            shape, dt, sh = memref_type(out_t)
            if not sh:
                raise EmuError("view of shared memory outside workgroup space")
            setr([self.block.dynamic_view(ins[1][0], shape, dt)] * LANES)
        elif n == "memref.dim":
            setr([ins[0][0].shape[ins[1][0]]] * LANES)
        elif n == "memref.load":
            buf = ins[0][0]
            setr([self.load(buf, [x[l] for x in ins[1:]], l) if mask[l] else None
                  for l in L])
        elif n == "memref.store":
            buf = ins[1][0]
            for l in L:
                if mask[l]:
                    self.store(buf, [x[l] for x in ins[2:]], l, ins[0][l])
        elif n == "vector.load":
            buf = ins[0][0]
            k = int(re.search(r"vector<(\d+)x", out_t).group(1))
            self.check_align(buf, ins[1:], attr_int(op, "alignment"), mask)
            res = []
            for l in L:
                if not mask[l]:
                    res.append(None)
                    continue
                idx = [x[l] for x in ins[1:]]
                res.append(tuple(self.load(buf, idx[:-1] + [idx[-1] + j], l)
                                 for j in range(k)))
            setr(res)
        elif n == "vector.store":
            buf = ins[1][0]
            self.check_align(buf, ins[2:], attr_int(op, "alignment"), mask)
            for l in L:
                if mask[l]:
                    idx = [x[l] for x in ins[2:]]
                    for j, v in enumerate(ins[0][l]):
                        self.store(buf, idx[:-1] + [idx[-1] + j], l, v)
        elif n == "memref.atomic_rmw":
            kind = attr_int(op, "kind")
            if kind != 1:
                raise EmuError("atomic_rmw kind %d" % kind)
            buf = ins[1][0]
            w = intw(op.ins_t[0])
            res = [None] * LANES
            order = [l for l in L if mask[l]]
            self.rng.shuffle(order)
            for l in order:
                idx = [x[l] for x in ins[2:]]
                f = buf.flat(idx)
                key = buf.addr + f * buf.esize
                if buf.shared and key in self.block.inflight:
                    raise EmuError("atomic on in-flight shared memory")
                self.launch.tracker.atomic(key, self.who(l), buf.name)
                old = buf.data[f]
                if old is None:
                    raise EmuError("atomic on uninitialised %s%s" % (buf.name, idx))
                res[l] = old
                buf.data[f] = wrap(old + ins[0][l], w)
            setr(res)
        elif n == "memref.extract_aligned_pointer_as_index":
            buf = ins[0][0]
            setr([self.block.shared_address(buf) if buf.shared else buf.addr] * LANES)
        elif n == "llvm.mlir.undef":
            size = len(split_top(re.fullmatch(r"!llvm\.struct<\((.*)\)>", out_t).group(1)))
            setr([tuple([None] * size)] * LANES)
        elif n == "llvm.insertvalue":
            p = attr_array(op, "position")[0]
            res = []
            for st, v, m in zip(ins[0], ins[1], mask):
                if isinstance(st, WgmmaResult):
                    raise EmuError("insertvalue into a wgmma result")
                res.append(st[:p] + (v,) + st[p + 1:] if m else None)
            setr(res)
        elif n == "nvvm.fence.proxy":
            if "#nvvm.proxy_kind<async.shared>" not in op.rest:
                raise EmuError("fence.proxy other than async.shared")
            for l in L:
                if mask[l]:
                    for key in self.block.unfenced_by.pop(self.tid0 + l, ()):
                        if self.block.unfenced.get(key) == self.tid0 + l:
                            del self.block.unfenced[key]
        elif n == "nvvm.wgmma.fence.aligned":
            if not all(mask):
                raise EmuError("wgmma.fence with inactive lanes")
            self.wg_fenced = True
        elif n == "nvvm.wgmma.mma_async":
            self.wgmma(op, ins, mask)
        elif n == "nvvm.wgmma.commit.group.sync.aligned":
            if not all(mask):
                raise EmuError("wgmma.commit_group with inactive lanes")
            self.wg_groups.append(self.wg_open)
            self.wg_open = []
        elif n == "nvvm.wgmma.wait.group.sync.aligned":
            if not all(mask):
                raise EmuError("wgmma.wait_group with inactive lanes")
            keep = int(re.search(r"group = (\d+)", op.rest).group(1))
            while len(self.wg_groups) > keep:
                for res, keys in self.wg_groups.pop(0):
                    res.done = True
                    for key in keys:
                        self.block.wgmma_reads[key] -= 1
                        if not self.block.wgmma_reads[key]:
                            del self.block.wgmma_reads[key]
            self.wg_fenced = False
        elif n == "llvm.inttoptr":
            setr(list(ins[0]))
        elif n == "llvm.getelementptr":
            et = re.search(r"elem_type = (\w+)", op.rest).group(1)
            if attr_array(op, "rawConstantIndices") != [-2147483648]:
                raise EmuError("getelementptr with constant indices")
            setr([p + i * ELEM_BYTES[et] if m else 0
                  for p, i, m in zip(ins[0], ins[1], mask)])
        elif n == "llvm.atomicrmw":
            if attr_int(op, "bin_op") != 11:  # LLVM AtomicBinOp fadd
                raise EmuError("llvm.atomicrmw bin_op %d" % attr_int(op, "bin_op"))
            setr(self.atomic_fadd(ins, mask, 1, "atomic fadd"))
        elif n == "nvvm.inline_ptx":
            # The only inline PTX the kernels use: the sm_90 vector f32
            # reduction of the atomic combine (two adjacent f32, 8-byte
            # aligned).
            code = re.search(r'ptxCode = "([^"]*)"', op.rest).group(1)
            if code != "red.global.add.v2.f32 [$0], {$1, $2};" or len(ins) != 3:
                raise EmuError("inline PTX not understood: " + code)
            self.atomic_fadd(ins, mask, 2, "red.v2.f32")
        elif n == "llvm.addrspacecast":
            setr(list(ins[0]))
        elif n == "nvvm.mbarrier.init":
            if len(ins) != 2:
                raise EmuError("predicated mbarrier.init")
            for l in L:
                if mask[l]:
                    addr = ins[0][l]
                    if addr % 8:
                        raise EmuError("mbarrier.init at %d, not 8-byte aligned" % addr)
                    self.block.resolve_shared(addr, "mbarrier.init")
                    self.block.mbar[addr] = {"count": ins[1][l], "arrivals": ins[1][l],
                                             "tx": 0, "phase": 0}
        elif n == "nvvm.fence.mbarrier.init":
            pass
        elif n == "nvvm.mbarrier.arrive.expect_tx":
            if len(ins) != 2 or op.results:
                raise EmuError("mbarrier.arrive.expect_tx form not modelled")
            for l in L:
                if mask[l]:
                    st = self.mbarrier(ins[0][l], "mbarrier.arrive.expect_tx")
                    self.mbar_update(ins[0][l], st, 1, ins[1][l])
        elif n == "nvvm.cp.async.bulk.tensor.shared.cluster.global":
            self.tma_load(op, ins, mask)
        elif n == "nvvm.mbarrier.try_wait.parity":
            # The lowering loops until the phase of this parity has
            # completed: the current (incomplete) phase n has parity n % 2,
            # the one before it (n - 1) the other. A wait for the current
            # phase's parity never returns here (every copy completes at
            # issue), so it is a deadlock on the GPU too.
            for l in L:
                if mask[l]:
                    addr, parity = ins[0][l], ins[1][l]
                    st = self.mbarrier(addr, "mbarrier.try_wait.parity")
                    if parity not in (0, 1):
                        raise EmuError("mbarrier.try_wait.parity with parity %d" % parity)
                    if st["phase"] % 2 == parity:
                        raise EmuError("thread %d waits on mbarrier %d for phase "
                                       "parity %d, which never completes" %
                                       (self.tid0 + l, addr, parity))
                    self.block.observed[(self.tid0 + l, addr)] = st["phase"] - 1
        elif n == "nvgpu.device_async_copy":
            self.async_copy(op, ins, mask)
            setr([0] * LANES)
        elif n == "nvvm.cp.async.commit.group":
            for l in L:
                if mask[l]:
                    t = self.tid0 + l
                    self.block.groups.setdefault(t, []).append(
                        self.block.pending.pop(t, []))
        elif n == "nvvm.cp.async.wait.group":
            keep = attr_int(op, "n")
            for l in L:
                if mask[l]:
                    self.wait_group(self.tid0 + l, keep)
        elif n == "nvgpu.ldmatrix":
            self.ldmatrix(op, ins, mask)
        elif n == "nvvm.mma.sync":
            self.mma(op, ins, mask)
        else:
            raise EmuError("unsupported op " + n)

    def check_align(self, buf, idx, align, mask):
        if not align:
            return
        for l in range(LANES):
            if mask[l]:
                off = buf.flat([x[l] for x in idx]) * buf.esize
                if (buf.addr + off) % align:
                    raise EmuError("misaligned %d-byte access to %s" % (align, buf.name))

    def async_copy(self, op, ins, mask):
        seg = attr_array(op, "operandSegmentSizes")
        dst_n, src_n = seg[1], seg[3]
        dst = ins[0][0]
        src = ins[1 + dst_n][0]
        n_el = attr_int(op, "dstElements")
        if n_el * dst.esize != 16 or "bypassL1" not in op.rest:
            raise EmuError("cp.async that is not 16-byte .cg")
        has_src_n = seg[4] if len(seg) > 4 else 0
        for l in range(LANES):
            if not mask[l]:
                continue
            t = self.tid0 + l
            didx = [x[l] for x in ins[1:1 + dst_n]]
            sidx = [x[l] for x in ins[2 + dst_n:2 + dst_n + src_n]]
            src_elems = ins[2 + dst_n + src_n][l] if has_src_n else n_el
            if not 0 <= src_elems <= n_el:
                raise EmuError("cp.async src-size %d" % src_elems)
            if didx[-1] + n_el > dst.shape[-1]:
                raise EmuError("cp.async destination crosses a row")
            dflat = dst.flat(didx)
            if (dst.addr + dflat * dst.esize) % 16:
                raise EmuError("cp.async destination not 16-byte aligned")
            vals = []
            if src_elems:
                if sidx[-1] + src_elems > src.shape[-1]:
                    raise EmuError("cp.async source crosses a row")
                sflat = src.flat(sidx)
                if (src.addr + sflat * src.esize) % 16:
                    raise EmuError("cp.async source not 16-byte aligned")
                for j in range(src_elems):
                    vals.append(self.load(src, sidx[:-1] + [sidx[-1] + j], l,
                                          "cp.async source read"))
            vals += [0.0] * (n_el - src_elems)
            keys = []
            for j in range(n_el):
                key = dst.addr + (dflat + j) * dst.esize
                if key in self.block.inflight:
                    raise EmuError("cp.async to shared %s%s already in flight" %
                                   (dst.name, didx))
                if key in self.block.wgmma_reads:
                    raise EmuError("cp.async to shared %s%s while a wgmma (not "
                                   "waited for) reads it" % (dst.name, didx))
                self.launch.tracker.write(key, self.who(l), dst.name)
                self.block.inflight[key] = t
                keys.append(key)
            self.block.pending.setdefault(t, []).append((dst, dflat, vals, keys))

    def wait_group(self, t, keep):
        groups = self.block.groups.get(t, [])
        while len(groups) > keep:
            for dst, dflat, vals, keys in groups.pop(0):
                for j, (v, key) in enumerate(zip(vals, keys)):
                    del self.block.inflight[key]
                    self.launch.tracker.write(key, (self.block.bid, self.block.phase, t),
                                              dst.name)
                    dst.data[dflat + j] = v
                    self.block.unfenced[key] = t
                    self.block.unfenced_by.setdefault(t, set()).add(key)

    def ldmatrix(self, op, ins, mask):
        if not all(mask):
            raise EmuError("ldmatrix with inactive lanes")
        ntiles = attr_int(op, "numTiles")
        trans = "transpose = true" in op.rest
        buf = ins[0][0]
        if not buf.shared or buf.esize not in (2, 4) or (trans and buf.esize != 2):
            raise EmuError("ldmatrix from non-shared memory, of other than 16- "
                           "or 32-bit elements, or .trans of 32-bit ones")
        # A row is 16 bytes: 8 16-bit elements, or 4 32-bit ones (one per
        # 32-bit register of the 8x8 b16 matrix).
        per_row = 16 // buf.esize
        mats = []
        for i in range(ntiles):
            rows = []
            for r in range(8):
                lane = 8 * i + r
                idx = [x[lane] for x in ins[1:]]
                if idx[-1] + per_row > buf.shape[-1]:
                    raise EmuError("ldmatrix row crosses a memref row")
                if (buf.addr + buf.flat(idx) * buf.esize) % 16:
                    raise EmuError("ldmatrix row address not 16-byte aligned")
                rows.append([self.load(buf, idx[:-1] + [idx[-1] + j], lane, "ldmatrix")
                             for j in range(per_row)])
            mats.append(rows)
        res = []
        for l in range(LANES):
            g, t = l // 4, l % 4
            if per_row == 4:
                res.append(tuple((m[g][t],) for m in mats))
            elif trans:
                res.append(tuple((m[2 * t][g], m[2 * t + 1][g]) for m in mats))
            else:
                res.append(tuple((m[g][2 * t], m[g][2 * t + 1]) for m in mats))
        self.env[op.results[0]] = res

    def mma(self, op, ins, mask):
        if not all(mask):
            raise EmuError("mma.sync with inactive lanes")
        if (op.attr_shape if hasattr(op, "attr_shape") else None) is None:
            op.attr_shape = re.search(r"shape = #nvvm.shape<([^>]*)>", op.rest).group(1)
            ta = re.search(r"multiplicandAPtxType = #nvvm.mma_type<(\w+)>", op.rest).group(1)
            tb = re.search(r"multiplicandBPtxType = #nvvm.mma_type<(\w+)>", op.rest).group(1)
            shape = {"bf16": "m = 16, n = 8, k = 16", "f16": "m = 16, n = 8, k = 16",
                     "tf32": "m = 16, n = 8, k = 8"}
            if (ta != tb or op.attr_shape != shape.get(ta) or
                    "layoutA = #nvvm.mma_layout<row>" not in op.rest
                    or "layoutB = #nvvm.mma_layout<col>" not in op.rest or
                    attr_array(op, "operandSegmentSizes") != [4, 2, 4]):
                raise EmuError("unsupported mma.sync " + op.rest)
            op.attr_tf32 = ta == "tf32"
        # tf32 (m16n8k8, "Matrix Fragments for mma.m16n8k8", .tf32): with
        # g = lane/4, t = lane%4, A registers 0..3 hold (row g, col t),
        # (g+8, t), (g, t+4), (g+8, t+4); B registers 0..1 hold (row t,
        # col g), (t+4, g); C/D as m16n8k16. Each operand register must hold
        # a tf32 value (an f32 bit pattern with the low 13 bits zero, as
        # cvt.rna.tf32.f32 leaves it): anything else is an error, not a
        # silent truncation.
        def tf32(b):
            if unsigned(b, 32) & 0x1FFF:
                raise EmuError("mma.sync tf32 operand 0x%08x is not a tf32 value"
                               % unsigned(b, 32))
            return bits_f32(b)
        K = 8 if op.attr_tf32 else 16
        A = [[None] * K for _ in range(16)]
        B = [[None] * 8 for _ in range(K)]   # B[k][n]
        C = [[None] * 8 for _ in range(16)]
        for l in range(LANES):
            g, t = l // 4, l % 4
            if op.attr_tf32:
                A[g][t], A[g + 8][t], A[g][t + 4], A[g + 8][t + 4] = (
                    tf32(ins[i][l]) for i in range(4))
                B[t][g], B[t + 4][g] = tf32(ins[4][l]), tf32(ins[5][l])
            else:
                a0, a1, a2, a3 = ins[0][l], ins[1][l], ins[2][l], ins[3][l]
                A[g][2 * t], A[g][2 * t + 1] = a0
                A[g + 8][2 * t], A[g + 8][2 * t + 1] = a1
                A[g][2 * t + 8], A[g][2 * t + 9] = a2
                A[g + 8][2 * t + 8], A[g + 8][2 * t + 9] = a3
                b0, b1 = ins[4][l], ins[5][l]
                B[2 * t][g], B[2 * t + 1][g] = b0
                B[2 * t + 8][g], B[2 * t + 9][g] = b1
            C[g][2 * t], C[g][2 * t + 1] = ins[6][l], ins[7][l]
            C[g + 8][2 * t], C[g + 8][2 * t + 1] = ins[8][l], ins[9][l]
        Bc = [[B[k][n] for k in range(K)] for n in range(8)]
        D = [[f32(sum([a * b for a, b in zip(A[m], Bc[n])]) + C[m][n])
              for n in range(8)] for m in range(16)]
        res = []
        for l in range(LANES):
            g, t = l // 4, l % 4
            res.append((D[g][2 * t], D[g][2 * t + 1], D[g + 8][2 * t], D[g + 8][2 * t + 1]))
        self.env[op.results[0]] = res

    def atomic_fadd(self, ins, mask, width, what):
        """f32 atomic additions of `width` adjacent values (ins[1..width]) at
        each active lane's address (ins[0], aligned to the whole vector), in
        shuffled lane order; returns each lane's old first value."""
        res = [None] * LANES
        order = [l for l in range(LANES) if mask[l]]
        self.rng.shuffle(order)
        for l in order:
            buf, f = self.emu.resolve(ins[0][l], 4 * width)
            if buf.dtype != "f32" or f + width > buf.size:
                raise EmuError("%s on %s[%d]" % (what, buf.name, f))
            res[l] = buf.data[f]
            for j in range(width):
                self.launch.tracker.atomic(buf.addr + (f + j) * 4, self.who(l),
                                           buf.name)
                old = buf.data[f + j]
                if old is None:
                    raise EmuError("%s on uninitialised %s[%d]" % (what, buf.name, f + j))
                buf.data[f + j] = f32(old + ins[1 + j][l])
        return res

    def wgmma(self, op, ins, mask):
        """wgmma.mma_async m64nNk16, f32 += bf16/f16 x bf16/f16, both operands
        K-major in shared memory through matrix descriptors (PTX ISA,
        "Matrix Descriptor" and the no-swizzle canonical layout: element
        (r, k) of A (r in M) or B (r in N) at start + (r / 8) * SBO +
        (k / 8) * LBO + (r % 8) * 16 + (k % 8) * 2 bytes; or layout type 1,
        the 128-byte swizzle: lin = start + (r / 8) * SBO + (r % 8) * 128 +
        k * 2, address lin ^ (((lin >> 7) & 7) << 4), shared addresses being
        absolute, so a tile not on a 1024-byte boundary reads other bytes
        than its writer swizzled). Executed per warp:
        warp w of its warpgroup gets rows 16 (w % 4) .. + 15, lane l the
        accumulators i = 0 .. N/2 - 1 at row 16 (w % 4) + l / 4 + 8 ((i / 2)
        % 2), column 8 (i / 4) + 2 (l % 4) + i % 2 (the PTX ISA's D
        fragment of m64nNk16). Products exact, each sum rounded once to f32.
        The warpgroup's four warps must issue the same descriptors."""
        if not all(mask):
            raise EmuError("wgmma.mma_async with inactive lanes")
        if not self.wg_fenced:
            raise EmuError("wgmma.mma_async without a wgmma.fence since the last wait")
        m = re.search(r"shape = #nvvm.shape<m = (\d+), n = (\d+), k = (\d+)>", op.rest)
        M, N, K = int(m.group(1)), int(m.group(2)), int(m.group(3))
        ta = re.search(r"typeA = #nvvm.wgmma_type<(\w+)>", op.rest).group(1)
        tb = re.search(r"typeB = #nvvm.wgmma_type<(\w+)>", op.rest).group(1)
        td = re.search(r"typeD = #nvvm.wgmma_type<(\w+)>", op.rest).group(1)
        if (M, K) != (64, 16) or N % 8 or not 8 <= N <= 256 or ta != tb or \
                ta not in ("bf16", "f16") or td != "f32" or \
                "scaleD = #nvvm.wgmma_scale_out<one>" not in op.rest or \
                "layoutA = #nvvm.mma_layout<row>" not in op.rest or \
                "layoutB = #nvvm.mma_layout<col>" not in op.rest or \
                "scaleA = #nvvm.wgmma_scale_in<one>" not in op.rest or \
                "scaleB = #nvvm.wgmma_scale_in<one>" not in op.rest:
            raise EmuError("unsupported wgmma.mma_async " + op.rest)
        acc_in, da, db = ins[0], ins[1], ins[2]
        if len(set(da)) != 1 or len(set(db)) != 1:
            raise EmuError("wgmma descriptors differ between lanes")
        da, db = da[0] & (2 ** 64 - 1), db[0] & (2 ** 64 - 1)
        key = (self.warp // 4, self.wg_count)
        self.wg_count += 1
        logged = self.block.wgmma_log.setdefault(key, (da, db, N))
        if logged != (da, db, N):
            raise EmuError("the warps of warpgroup %d issue different wgmmas" % key[0])

        def decode(d, what):
            if d >> 62 not in (0, 1):
                raise EmuError("%s descriptor with swizzle mode %d" % (what, d >> 62))
            if (d >> 49) & 7:
                raise EmuError("%s descriptor with a base offset" % what)
            return ((d & 0x3FFF) << 4, ((d >> 16) & 0x3FFF) << 4,
                    ((d >> 32) & 0x3FFF) << 4, d >> 62)
        keys = []

        def operand(d, rows, what):
            start, lbo, sbo, mode = decode(d, what)
            if mode == 1 and (start % 1024) + 2 * K > 128:
                raise EmuError("%s: a 128B-swizzled K slice crosses its 128-byte "
                               "row" % what)
            out = []
            for r in range(rows):
                row = []
                for k in range(K):
                    if mode == 1:
                        # 128B swizzle (layout type 1): rows of 128 bytes
                        # within 8-row groups SBO apart, K contiguous from
                        # the start; then address bits 4-6 XOR bits 7-9 (the
                        # pattern repeats every 1024 bytes of shared memory).
                        lin = start + (r // 8) * sbo + (r % 8) * 128 + k * 2
                        addr = lin ^ (((lin >> 7) & 7) << 4)
                    else:
                        addr = (start + (r // 8) * sbo + (k // 8) * lbo + (r % 8) * 16
                                + (k % 8) * 2)
                    buf, f = self.block.resolve_shared(addr, "wgmma " + what)
                    if buf.dtype != ta:
                        raise EmuError("wgmma %s reads %s as %s" % (what, buf.dtype, ta))
                    kk = buf.addr + f * buf.esize
                    if kk in self.block.inflight:
                        raise EmuError("wgmma %s reads shared %s before the cp.async "
                                       "writing it completed" % (what, buf.name))
                    self.tma_visible(kk, range(self.tid0, self.tid0 + LANES),
                                     "wgmma " + what)
                    if kk in self.block.unfenced:
                        raise EmuError("wgmma %s reads shared %s written through the "
                                       "generic proxy (thread %d) without a "
                                       "fence.proxy.async after it" %
                                       (what, buf.name, self.block.unfenced[kk]))
                    self.launch.tracker.read(kk, self.who(0), buf.name)
                    v = buf.data[f]
                    if v is None:
                        raise EmuError("wgmma %s reads uninitialised shared %s[%d]"
                                       % (what, buf.name, f))
                    keys.append(kk)
                    row.append(v)
                out.append(row)
            return out
        q = self.warp % 4
        A = operand(da, 64, "A")[16 * q:16 * q + 16]
        B = operand(db, N, "B")
        res = []
        for l in range(LANES):
            acc = acc_in[l]
            if len(acc) != N // 2 or any(v is None for v in acc):
                raise EmuError("wgmma accumulators: %d values, %d expected, or "
                               "undefined" % (len(acc), N // 2))
            out = []
            for i in range(N // 2):
                row = l // 4 + 8 * ((i // 2) % 2)
                col = 8 * (i // 4) + 2 * (l % 4) + i % 2
                out.append(f32(sum([a * b for a, b in zip(A[row], B[col])]) + acc[i]))
            res.append(WgmmaResult(out))
        for kk in keys:
            self.block.wgmma_reads[kk] = self.block.wgmma_reads.get(kk, 0) + 1
        self.wg_open.append((_Group(res), keys))
        self.env[op.results[0]] = res


class _Group:
    """The results of one wgmma (every lane's), completed together."""

    def __init__(self, res):
        self.res = res

    @property
    def done(self):
        return self.res[0].done

    @done.setter
    def done(self, v):
        for r in self.res:
            r.done = v


class WgmmaResult(tuple):
    """One lane's accumulators from wgmma.mma_async: readable (extractvalue)
    only once a wait_group has completed its group (`done`)."""
    done = False


def _ceildiv(x, y, w):
    x, y = unsigned(x, w), unsigned(y, w)
    return -(-x // y)


INT_OPS = {
    "arith.addi": lambda x, y, w: x + y,
    "arith.subi": lambda x, y, w: x - y,
    "arith.muli": lambda x, y, w: x * y,
    "arith.andi": lambda x, y, w: int(x) & int(y),
    "arith.ori": lambda x, y, w: int(x) | int(y),
    "arith.xori": lambda x, y, w: int(x) ^ int(y),
    "arith.shli": lambda x, y, w: x << y if y < w else 0,
    "arith.shrui": lambda x, y, w: unsigned(x, w) >> y,
    "arith.minsi": lambda x, y, w: min(x, y),
    "arith.maxsi": lambda x, y, w: max(x, y),
    "arith.minui": lambda x, y, w: min(unsigned(x, w), unsigned(y, w)),
    "arith.maxui": lambda x, y, w: max(unsigned(x, w), unsigned(y, w)),
    "arith.divui": lambda x, y, w: unsigned(x, w) // unsigned(y, w),
    "arith.remui": lambda x, y, w: unsigned(x, w) % unsigned(y, w),
    "arith.ceildivui": _ceildiv,
}


def _fma(a, b, c):
    return f32(a * b + c)


def _frsqrt(x):
    """rsqrt correctly rounded from double (rsqrt.approx's ulp error is not
    modelled): +inf at 0, NaN below."""
    if x == 0.0:
        return math.copysign(math.inf, x)
    if x < 0.0 or math.isnan(x):
        return math.nan
    return f32(1.0 / math.sqrt(x))


def _ftanh(x):
    return f32(math.tanh(x))


def _f64div(x, y):
    if y == 0.0:
        return math.nan if x == 0.0 or math.isnan(x) else \
            math.copysign(math.inf, x) * math.copysign(1.0, y)
    return x / y


F64_OPS = {
    "arith.addf": lambda x, y: x + y,
    "arith.subf": lambda x, y: x - y,
    "arith.mulf": lambda x, y: x * y,
    "arith.divf": _f64div,
    "math.ceil": lambda x: float(math.ceil(x)) if math.isfinite(x) else x,
}

FLOAT_OPS = {
    "arith.addf": lambda x, y: f32(x + y),
    "arith.subf": lambda x, y: f32(x - y),
    "arith.mulf": lambda x, y: f32(x * y),
    "arith.divf": fdiv,
    "arith.negf": lambda x: -x,
    "arith.maximumf": RE.fmaximum,
    "arith.minimumf": RE.fminimum,
    "math.exp": fexp,
    "math.erf": lambda x: f32(math.erf(x)),
    "math.tanh": _ftanh,
    "math.fma": _fma,
    "math.sqrt": lambda x: f32(math.sqrt(x)),
    "math.rsqrt": lambda x: _frsqrt(x),
}

# ---------------------------------------------------------------------------
# Host side
# ---------------------------------------------------------------------------


class Emulator:
    def __init__(self, module_text, seed):
        self.rng = random.Random(seed)
        lines = module_text.splitlines()
        self.kernels, self.funcs = {}, {}
        module = None
        for k, line in enumerate(lines):
            if '"gpu.module"' in line:
                module = re.search(r'sym_name = "(\w+)"', line).group(1)
            if '"gpu.func"' in line or '"func.func"' in line:
                ops, _ = parse_ops(lines, k)
                ops[0].rest = line + " " + ops[0].rest
                name = re.search(r'sym_name = "(\w+)"', ops[0].rest).group(1)
                if '"gpu.func"' in line:
                    bb = lines[k + 1].strip()
                    assert bb.startswith("^bb0("), bb
                    ops[0].arg_types = [a.split(": ", 1)[1]
                                        for a in split_top(bb[5:bb.rindex(")")])]
                    self.kernels["@%s::@%s" % (module, name)] = ops[0]
                else:
                    self.funcs[name] = (ops[0], line)
        self.bufs = []

    def resolve(self, addr, size):
        i = bisect.bisect_right(self.addrs, addr) - 1
        if i < 0:
            raise EmuError("wild pointer")
        buf = self.bufs_by_addr[i]
        off = addr - buf.addr
        if off % size or not 0 <= off < buf.size * buf.esize:
            raise EmuError("pointer outside %s or misaligned" % buf.name)
        return buf, off // buf.esize

    def run_host(self, fname, args):
        func, _ = self.funcs[fname]
        env = dict(zip(func.regions[0][0], args))
        return self.run_host_ops(func.regions[0][1], env)

    def run_host_ops(self, ops, env):
        """Host ops of a function body or an scf.if region: returns the
        values of its func.return or scf.yield."""
        for op in ops:
            op_info(op)
            n = op.name
            ins = [env.get(o) for o in op.operands]
            if n == "arith.constant":
                env[op.results[0]] = parse_const(op)
            elif n == "tensor.dim":
                env[op.results[0]] = ins[0].shape[ins[1]]
            elif n in ("tensor.expand_shape", "tensor.collapse_shape",
                       "memref.expand_shape", "memref.collapse_shape"):
                # A view of the same elements (row-major) with the result's
                # static shape: the same data and address (memref: of an
                # identity layout only, as the passes make them).
                # One dynamic size at most: the elements left over by the
                # static ones (e.g. ?x1x64 -> ?x64).
                shape = re.search(r"(?:tensor|memref)<([\d?x]+)x[a-z]\w*>$",
                                  op.outs_t[0])
                dims = shape.group(1).split("x") if shape else []
                if not shape or dims.count("?") > 1:
                    raise EmuError("host reshape to " + op.outs_t[0])
                static = 1
                for d in dims:
                    static *= 1 if d == "?" else int(d)
                env[op.results[0]] = ins[0].view(
                    [ins[0].size // static if d == "?" else int(d) for d in dims])
            elif n in INT_OPS:
                env[op.results[0]] = INT_OPS[n](ins[0], ins[1], 64)
            elif n in ("bufferization.to_buffer", "bufferization.to_tensor",
                       "memref.cast", "tensor.cast"):
                env[op.results[0]] = ins[0]
            elif n == "memref.alloc":
                shape, dt, _ = memref_type(op.outs_t[0])
                dyn = iter(ins)
                shape = [next(dyn) if d is None else d for d in shape]
                b = Buf("alloc%d" % len(self.bufs), shape, dt)
                self.bufs.append(b)
                env[op.results[0]] = b
            elif n == "tensor.splat":
                # A tensor of one value (a shared expert's expert indices, all
                # 0): the scalar, then the dynamic sizes.
                shape, dt, _ = memref_type(op.outs_t[0].replace("tensor<", "memref<"))
                dyn = iter(ins[1:])
                shape = [next(dyn) if d is None else d for d in shape]
                b = Buf("splat%d" % len(self.bufs), shape, dt)
                b.data = [ins[0]] * len(b.data)
                self.bufs.append(b)
                env[op.results[0]] = b
            elif n == "func.call":
                callee = re.search(r"callee = @(\w+)", op.rest).group(1)
                self.launch_all(callee, ins)
            elif n == "arith.cmpi":
                # Host tests on token counts (kernel-set and routing-path
                # branches).
                env[op.results[0]] = cmpi(CMPI[attr_int(op, "predicate")],
                                          ins[0], ins[1], 64)
            elif n == "scf.if":
                # The branch the host takes (its region's ops, its yield).
                region = op.regions[0 if ins[0] else 1]
                self.taken = getattr(self, "taken", []) + [bool(ins[0])]
                for r, v in zip(op.results, self.run_host_ops(region[1], env)):
                    env[r] = v
            elif n in ("func.return", "scf.yield"):
                return ins
            else:
                raise EmuError("host op " + n)

    def launch_all(self, callee, operands):
        line = self.funcs[callee][0].rest
        if not re.search(r"moe\.(expert_kernels|linear_kernel|route_kernel|norm_kernel)", line):
            raise EmuError("call of %s: no launch list" % callee)
        all_bufs = self.bufs + [o for o in operands if isinstance(o, Buf)]
        all_bufs = list({id(b): b for b in all_bufs}.values())
        all_bufs.sort(key=lambda b: b.addr)
        self.bufs_by_addr = all_bufs
        self.addrs = [b.addr for b in all_bufs]
        self.launches = getattr(self, "launches", [])  # every call's, in order
        listed = line.count("kernel = @")
        for m in re.finditer(r"\{args = array<i64: ([\d, ]+)>, grid = array<i64: "
                             r"(-?\d+), (\d+)>(?:, grid_divisor = (\d+) : i64)?, "
                             r"kernel = (@\w+::@\w+)(?:, smem = (\d+) : i64)?, "
                             r"(?:tensor_maps = \[([^\]]*)\], )?"
                             r"threads = (\d+) : i64\}", line):
            args = [operands[int(a)] for a in m.group(1).split(",")]
            for t in re.findall(r"array<i64: ([\d, ]+)>", m.group(7) or ""):
                o, b0, b1, b2, dt, sw = [int(v) for v in t.split(",")]
                args.append(TensorMap(operands[o], (b0, b1, b2), dt, sw))
            div = int(m.group(4) or 1)
            gx = 1 if int(m.group(2)) < 0 else \
                (operands[int(m.group(2))].shape[0] + div - 1) // div
            grid = (gx, int(m.group(3)))
            smem = int(m.group(6) or 0)
            self.launches.append((m.group(5), grid, smem, int(m.group(8))))
            self.run_kernel(self.kernels[m.group(5)], grid, int(m.group(8)), args,
                            smem)
            listed -= 1
        if listed:
            raise EmuError("call of %s: %d launch entries not understood"
                           % (callee, listed))

    def run_kernel(self, kernel, grid, threads, args, smem=0):
        known = re.search(r"known_block_size = array<i32: (\d+), 1, 1>", kernel.rest)
        if not known or int(known.group(1)) != threads:
            raise EmuError("launch threads %d != known_block_size" % threads)
        if threads % LANES:
            raise EmuError("block size not a multiple of 32")
        params, body = kernel.regions[0]
        ftype = re.search(r"function_type = \((.*?)\) -> \(\)", kernel.rest).group(1)
        n_args = len(split_top(ftype))
        if n_args != len(args):
            raise EmuError("launch passes %d args to a kernel of %d" % (len(args), n_args))
        # workgroup attribution types come from the body's block argument list.
        wg_types = self.wg_types(kernel)
        # The opt-in maximum of the kernels' chip (the pass's default and
        # every case here: sm_90 or sm_90a, 227 KiB).
        limit = 227
        if smem > limit * 1024:
            raise EmuError("launch asks for %d bytes of dynamic shared memory "
                           "(more than %d KiB)" % (smem, limit))
        launch = Launch(self, kernel, grid, threads, args, smem)
        blocks = [(x, y) for y in range(grid[1]) for x in range(grid[0])]
        self.rng.shuffle(blocks)
        for bid in blocks:
            shared = [Buf("shared%d" % i, s, dt, shared=True)
                      for i, (s, dt) in enumerate(wg_types)]
            block = BlockState(launch, bid, shared)
            warps = []
            for w in range(threads // LANES):
                wp = Warp(launch, block, w)
                for p, a in zip(params, args + shared):
                    wp.env[p] = [a] * LANES
                wp.gen = wp.run(body, [True] * LANES)
                warps.append(wp)
            live = list(warps)
            while live:
                order = list(live)
                self.rng.shuffle(order)
                at_barrier, done = [], []
                for wp in order:
                    try:
                        next(wp.gen)
                        at_barrier.append(wp)
                    except StopIteration:
                        done.append(wp)
                if at_barrier and done:
                    raise EmuError("a barrier not reached by every warp of block %s"
                                   % (bid,))
                block.phase += 1
                live = at_barrier
            for t, g in block.groups.items():
                if any(g):
                    raise EmuError("thread %d ends with cp.async groups not waited for" % t)
            if block.wgmma_reads:
                raise EmuError("block ends with wgmmas not waited for")
            for t, p in block.pending.items():
                if p:
                    raise EmuError("thread %d ends with uncommitted cp.async" % t)

    def wg_types(self, kernel):
        if not hasattr(kernel, "wg"):
            # The entry block's arguments past the function type's inputs
            # (no kernel here has private attributions).
            ftype = re.search(r"function_type = \((.*?)\) -> \(\)", kernel.rest).group(1)
            n = len(kernel.arg_types) - len(split_top(ftype))
            types = []
            for t in kernel.arg_types[len(kernel.arg_types) - n:] if n else []:
                s, dt, sh = memref_type(t)
                if not sh:
                    raise EmuError("workgroup attribution not in workgroup space")
                types.append((s, dt))
            kernel.wg = types
        return kernel.wg


def launch_names(emu):
    """`kernel(grid x, grid y)` per launch so far, in order; ` dyn-smem N`
    after one that asked for dynamic shared memory, ` 8 warps` after a
    GEMM (gate_up, down) of 256 threads."""
    out = []
    for k, g, sm, threads in getattr(emu, "launches", []):
        name = k.split("::@")[1]
        out.append(name + "%s" % (g,) + (" dyn-smem %d" % sm if sm else "") +
                   (" 8 warps" if threads == 256 and name in ("gate_up", "down")
                    else ""))
    return out


# ---------------------------------------------------------------------------
# The reference (MOE_SEMANTICS §3 experts, §2 combine) in double
# ---------------------------------------------------------------------------


def sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


def act(kind, g):
    if kind in ("swiglu",):
        return g / (1.0 + math.exp(-g))
    if kind in ("geglu", "gelu"):
        return 0.5 * g * (1.0 + math.erf(g / math.sqrt(2.0)))
    raise ValueError(kind)


def expert_row(case, x, e, round_h):
    """Expert_e(x) as runtime/reference/Reference.cpp's ffn/activate: biases
    start the sums (so b_g, b_u come before the activation and b_d is part of
    the expert's output, which the combine then weights)."""
    H, F, act_kind = case["H"], case["F"], case["act"]
    gated = act_kind in ("swiglu", "geglu", "swiglu_clamped")
    bg, bu, bd = case["gate_bias"], case["up_bias"], case["down_bias"]
    hs = []
    for f in range(F):
        u = (bu[e][f] if bu else 0.0) + sum(a * b for a, b in zip(case["up"][e][f], x))
        if gated:
            g = (bg[e][f] if bg else 0.0) + \
                sum(a * b for a, b in zip(case["gate"][e][f], x))
            if act_kind == "swiglu_clamped":
                alpha, limit = case["alpha"], case["limit"]
                gc = min(g, limit)
                uc = min(max(u, -limit), limit)
                if not round_h:  # how often the clamps bite (reported)
                    n = case.setdefault("clamps", [0, 0, 0])
                    n[0] += g > limit
                    n[1] += abs(u) > limit
                    n[2] += 1
                h = (uc + 1.0) * gc * sigmoid(alpha * gc)
            else:
                h = act(act_kind, g) * u
        else:
            h = act(act_kind, u)
        hs.append(round_to(h, case["dt"]) if round_h else h)
    return [(bd[e][o] if bd else 0.0) + sum(a * b for a, b in zip(case["down"][e][o], hs))
            for o in range(H)]


def reference(case, round_h):
    """round_h: also round h to the input dtype and the combined result to
    the result dtype, as the kernels do (a model of the kernels, not of
    MOE_SEMANTICS, which keeps h in f32/double)."""
    T, K, E, off = case["T"], case["K"], case["E"], case["offset"]
    scale = case["scale_input"]
    slots = []
    for t in range(T):
        row = []
        for k in range(K):
            i = case["idx"][t][k] - off
            # input_scale: Expert(w x), summed with weight 1.
            x = case["x"][t]
            if scale:
                x = [case["w"][t][k] * v for v in x]
            row.append(expert_row(case, x, i, round_h)
                       if 0 <= i < E else [0.0] * case["H"])
        slots.append(row)
    if case["combine"] == "none":
        return [v for row in slots for s in row for v in s]
    out = []
    for t in range(T):
        y = [0.0] * case["H"]
        for k in range(K):
            w = 1.0 if scale else case["w"][t][k]
            y = [a + w * b for a, b in zip(y, slots[t][k])]
        for ad in case["addends"]:
            y = [a + b for a, b in zip(y, ad[t])]
        if case["shared"]:
            # The shared expert's FFN (its own weights, no biases), weight 1
            # or, gated (Qwen2-MoE), sigmoid(x_t . w_s) (MOE_SEMANTICS §2).
            sh = dict(case, F=case["shared"]["F"], gate=case["shared"]["gate"],
                      up=case["shared"]["up"], down=case["shared"]["down"],
                      gate_bias=None, up_bias=None, down_bias=None)
            g = 1.0
            if case["shared"]["gate_weight"] is not None:
                g = sigmoid(math.fsum(a * b for a, b in
                                      zip(case["x"][t], case["shared"]["gate_weight"])))
            y = [a + g * b for a, b in zip(y, expert_row(sh, case["x"][t], 0, round_h))]
        if case["bias"] is not None:
            y = [a + b for a, b in zip(y, case["bias"])]
        if round_h:
            y = [round_to(v, case["result"]) for v in y]
        out.extend(y)
    return out


# ---------------------------------------------------------------------------
# Cases
# ---------------------------------------------------------------------------

# name: (H, F, E, K, dtype, activation, combine, tokens, extra)
# extra: offset (expert_offset; indices are drawn from 0 .. E + 2*offset - 1,
# so some slots go to experts of other ops), result (the combine's dtype,
# default the input's), addends (their dtypes), tiles (pass options),
# biases (a subset of "gud": gate_bias, up_bias, down_bias), alpha / limit
# (swiglu_clamped attributes; a small limit makes the clamps bite).
# Every case also has -1 slots and tokens whose slots are all -1.
CASES = [
    ("swiglu bf16 none", 32, 48, 4, 2, "bf16", "swiglu", "none", [0, 1, 3, 40], {}),
    ("gelu bf16 none T*K>1024", 32, 32, 4, 2, "bf16", "gelu", "none", [520], {}),
    ("swiglu bf16 atomic", 64, 64, 8, 2, "bf16", "swiglu", "atomic", [40],
     {"addends": ["f32"]}),
    # sm_90 vector reductions (red.global.add.v2.f32, inline PTX): a lane's
    # two adjacent columns in one.
    ("vector-red swiglu bf16 atomic", 64, 64, 8, 2, "bf16", "swiglu", "atomic",
     [1, 40], {"addends": ["f32"], "tiles": "vector-red=1"}),
    ("swiglu bf16 gather", 64, 64, 8, 2, "bf16", "swiglu", "gather", [17],
     {"addends": ["f32", "bf16"]}),
    ("geglu f16 atomic", 32, 64, 4, 2, "f16", "geglu", "atomic", [3, 17],
     {"addends": ["f16"]}),
    ("geglu f16 gather offset", 32, 64, 4, 2, "f16", "geglu", "gather", [0, 17],
     {"offset": 2}),
    ("gelu f16 none offset", 64, 96, 4, 2, "f16", "gelu", "none", [17],
     {"offset": 2}),
    ("gelu bf16 atomic f32-result", 32, 48, 8, 2, "bf16", "gelu", "atomic", [17, 520],
     {"result": "f32", "addends": ["f32"]}),
    ("swiglu f16 gather tiles", 64, 128, 4, 2, "f16", "swiglu", "gather", [40],
     {"tiles": "tile-m=32 tile-n-gate-up=32 tile-n-down=32 tile-k=16 stages=2"}),
    ("geglu f16 atomic E=17 BM=32 K=3", 32, 32, 17, 3, "f16", "geglu", "atomic", [23],
     {"addends": ["f32"]}),
    ("swiglu bf16 gather BM=128", 64, 64, 4, 2, "bf16", "swiglu", "gather", [40],
     {"tiles": "tile-m=128 tile-n-gate-up=16 tile-n-down=16 tile-k=32 stages=2"}),
    ("swiglu f16 none BK=64", 64, 64, 4, 2, "f16", "swiglu", "none", [19],
     {"tiles": "tile-m=32 tile-n-gate-up=32 tile-n-down=32 tile-k=64 stages=2"}),
    ("swiglu bf16 gather K=1", 32, 48, 4, 1, "bf16", "swiglu", "gather", [33], {}),
    ("swiglu bf16 atomic 4stages", 64, 64, 4, 2, "bf16", "swiglu", "atomic", [1, 17],
     {"tiles": "tile-k=16 stages=4"}),
    # gpt-oss: swiglu_clamped with gate, up and down biases.
    ("clamped bias bf16 none", 32, 48, 4, 2, "bf16", "swiglu_clamped", "none", [17],
     {"biases": "gud", "limit": 0.5}),
    ("clamped bias bf16 atomic", 32, 48, 8, 2, "bf16", "swiglu_clamped", "atomic",
     [1, 40], {"biases": "gud", "limit": 0.75, "alpha": 1.2, "addends": ["f32"]}),
    ("clamped bias f16 gather", 64, 32, 4, 2, "f16", "swiglu_clamped", "gather", [23],
     {"biases": "gud", "limit": 0.5, "addends": ["bf16"], "result": "f32"}),
    ("clamped bias f16 atomic K=3 tiles", 32, 64, 6, 3, "f16", "swiglu_clamped",
     "atomic", [19], {"biases": "gud", "limit": 0.6, "result": "f16",
                      "tiles": "tile-m=32 tile-n-gate-up=32 tile-n-down=16 tile-k=16 stages=2"}),
    ("clamped default-limit bias bf16 gather", 32, 32, 4, 2, "bf16", "swiglu_clamped",
     "gather", [9], {"biases": "gud"}),
    # Biases with other activations, and only some of them.
    ("swiglu up-down-bias bf16 atomic", 32, 48, 4, 2, "bf16", "swiglu", "atomic", [17],
     {"biases": "ud"}),
    ("gelu bias f16 none", 32, 32, 4, 1, "f16", "gelu", "none", [9], {"biases": "ud"}),
    ("geglu gate-bias bf16 gather", 32, 32, 4, 2, "bf16", "geglu", "gather", [9],
     {"biases": "g"}),
    # The BM = 128 set that moe-to-nvvm forms beside BM = 64 for many rows
    # (tile-m=128, the other tiles from the shape).
    # Three stages need 60 KiB there: dynamic shared memory (memref.view of
    # gpu.dynamic_shared_memory, the launch asks for the bytes).
    ("swiglu bf16 atomic BM=128 derived", 64, 128, 8, 2, "bf16", "swiglu", "atomic",
     [70, 300], {"tiles": "tile-m=128 wide-tiles=0", "addends": ["f32"]}),
    ("geglu f16 gather BM=128 4stages dynamic-smem", 64, 64, 4, 2, "f16", "geglu",
     "gather", [5, 150], {"tiles": "tile-m=128 stages=4", "addends": ["f16"]}),
    # The split-K set for a few tokens (split-k-blocks=512, the moe-to-nvvm
    # default): H = 64 -> one down column block, F = 512 -> 16 K steps in 4
    # slices; the host takes it while T * K < 512 (the scf.if runs in the
    # emulator), else the default set (T = 300). Down bias added once.
    ("swiglu bf16 atomic split-K", 64, 512, 8, 2, "bf16", "swiglu", "atomic",
     [1, 300], {"tiles": "split-k-blocks=512", "addends": ["f32"],
                   "biases": "d"}),
    ("geglu f16 atomic split-K f32-result", 32, 256, 4, 3, "f16", "geglu", "atomic",
     [2, 9], {"tiles": "split-k-blocks=512", "result": "f32", "biases": "ud"}),
    # A shared expert of the routed experts' shape joins their kernels
    # (fuse-shared): expert E, every token, weight 1; with another addend,
    # with split-K, with BM = 128 and f32 result.
    ("swiglu bf16 atomic shared-fused", 64, 64, 8, 2, "bf16", "swiglu", "atomic",
     [1, 17], {"shared": True, "addends": ["f32"]}),
    ("gelu f16 atomic shared-fused split-K f32-result", 32, 256, 4, 2, "f16", "gelu",
     "atomic", [3], {"shared": True, "result": "f32", "tiles": "split-k-blocks=512"}),
    ("geglu bf16 atomic shared-fused BM=128", 32, 32, 4, 3, "bf16", "geglu", "atomic",
     [40], {"shared": True, "tiles": "tile-m=128"}),
    # A shared expert 2 F and 3 F wide (DeepSeek-V2's two shared experts):
    # its column slices are experts E, E + 1 (, E + 2).
    ("swiglu bf16 atomic shared-fused 2F", 64, 64, 8, 2, "bf16", "swiglu", "atomic",
     [1, 9], {"shared": True, "shared_slices": 2, "addends": ["f32"]}),
    ("gelu f16 atomic shared-fused 3F split-K", 32, 256, 4, 2, "f16", "gelu", "atomic",
     [2], {"shared": True, "shared_slices": 3, "tiles": "split-k-blocks=512"}),
    # 8 warps per GEMM block (warps=8): 4 x 2 from BM = 64, 2 x 4 at BM = 32;
    # with the split-K set, dynamic shared memory, a fused shared expert.
    ("swiglu bf16 atomic 8warps BM=128", 64, 128, 8, 2, "bf16", "swiglu", "atomic",
     [1, 300], {"tiles": "tile-m=128 warps=8 split-k-blocks=512 wide-tiles=0", "addends": ["f32"]}),
    ("geglu f16 gather 8warps BM=64", 64, 64, 4, 2, "f16", "geglu", "gather", [23],
     {"tiles": "warps=8"}),
    ("gelu bf16 8warps BM=32 atomic shared-fused", 32, 64, 17, 2, "bf16", "gelu",
     "atomic", [9], {"tiles": "warps=8", "shared": True}),
    # The few-token set's first choice: BM 16, BK 128, gate/up 32 and down
    # 64 columns, 4 stages in dynamic shared memory, down split in 2.
    ("few-token BK=128 swiglu bf16 atomic", 128, 1024, 4, 2, "bf16", "swiglu",
     "atomic", [1, 3], {"tiles": "split-k-blocks=512 vector-red=1",
                        "addends": ["f32"]}),
    # The BM = 128 set's wide mma.sync tiles (8 warps, 2 x 4: gate_up
    # 128 x (128 + 128), down 128 x 128, BK 64, 3 stages, 162 KiB).
    ("wide mma.sync geglu f16 atomic", 128, 256, 4, 2, "f16", "geglu", "atomic",
     [40], {"tiles": "large-tile-rows=16 vector-red=1", "result": "f32"}),
    # E = 24 (> 16: BM = 32 from the shape) also gets the BM = 128 set
    # (session 23), taken from T * K >= large-tile-rows * E / 8 = 48: T = 5
    # runs BM = 32, T = 40 BM = 128 (the host's scf.if in the emulator).
    ("many experts BM=32/128 swiglu bf16 atomic", 64, 128, 24, 2, "bf16", "swiglu",
     "atomic", [5, 40], {"tiles": "large-tile-rows=16", "addends": ["f32"]}),
    # BM = 16 (one row of 4 warps; the split-K set's tiles), here for every
    # T, so that tiles of 16 rows hold several experts' rows in turn.
    ("tile-m 16 geglu f16 gather", 32, 64, 4, 2, "f16", "geglu", "gather", [5, 40],
     {"tiles": "tile-m=16"}),
    # sm_90a wgmma.mma_async (wgmma=1): one warpgroup per 64 rows, operands
    # in shared memory as no-swizzle K-major core matrices; BM = 64 and 128
    # (two warpgroups), gated and not, BK 16 to 64, split-K, a fused shared
    # expert.
    # (BK = 16: 4 and 8 K steps, so the 4 stage slots are refilled.)
    ("swiglu bf16 atomic wgmma", 64, 128, 8, 2, "bf16", "swiglu", "atomic", [1, 40],
     {"tiles": "chip=sm_90a wgmma=1 tile-k=16", "addends": ["f32"]}),
    ("gelu f16 gather wgmma BM=128 BK=64", 64, 64, 4, 2, "f16", "gelu", "gather",
     [70], {"tiles": "chip=sm_90a wgmma=1 tile-m=128 tile-k=64"}),
    # The BM = 128 set's wide wgmma tiles (large-tile-rows; chosen from the
    # shape: 128 x 256 outputs, gate and up one m64n256k16, BK 64, 4 stages
    # in up to 227 KiB), taken from T * K = 16.
    ("wide wgmma swiglu bf16 atomic", 256, 256, 4, 2, "bf16", "swiglu", "atomic",
     [40], {"tiles": "chip=sm_90a wgmma=1 large-tile-rows=16 vector-red=1",
               "addends": ["f32"]}),
    ("wide wgmma gelu f16 none ungated", 256, 256, 4, 1, "f16", "gelu", "none",
     [33], {"tiles": "chip=sm_90a wgmma=1 large-tile-rows=16"}),
    # The wide wgmma tiles with their weight tiles by TMA (tma=1, session
    # 25): a tensor map per weight from the launch list, thread 0 arming
    # the stage's mbarrier and issuing cp.async.bulk.tensor, every thread
    # waiting on it before the MMAs; gated (two maps into one fused B
    # buffer) and not, the atomic combine and none.
    ("wide wgmma TMA swiglu bf16 atomic", 256, 256, 4, 2, "bf16", "swiglu", "atomic",
     [40], {"tiles": "chip=sm_90a wgmma=1 tma=1 large-tile-rows=16 vector-red=1",
               "addends": ["f32"]}),
    ("wide wgmma TMA gelu f16 none ungated", 256, 256, 4, 1, "f16", "gelu", "none",
     [33], {"tiles": "chip=sm_90a wgmma=1 tma=1 large-tile-rows=16"}),
    # The same without the 128-byte swizzle (no-swizzle core matrices at
    # BK 64; the swizzled layout is the default there).
    ("wide wgmma no-swizzle swiglu bf16 atomic", 256, 256, 4, 2, "bf16", "swiglu",
     "atomic", [40], {"tiles": "chip=sm_90a wgmma=1 large-tile-rows=16 "
                               "wgmma-swizzle=0"}),
    # E = 17: mma.sync would take BM = 32, wgmma BM = 64.
    ("swiglu f16 atomic wgmma E=17 K=3", 32, 32, 17, 3, "f16", "swiglu", "atomic", [23],
     {"tiles": "chip=sm_90a wgmma=1", "result": "f32"}),
    ("geglu bf16 atomic wgmma split-K shared-fused", 32, 256, 4, 2, "bf16", "geglu",
     "atomic", [2, 9], {"tiles": "chip=sm_90a wgmma=1 split-k-blocks=512 tile-k=16",
                        "shared": True}),
    # Qwen2-MoE: the shared expert's sigmoid gate (a linear kernel for the
    # logits x . w_s before the kernels; down weighs the shared pairs by
    # sigmoid(logit_t)); 4 F wide like Qwen1.5-MoE-A2.7B (5632 = 4 x 1408),
    # with split-K, and with BM = 128 in dynamic shared memory.
    ("swiglu bf16 atomic gated-shared-fused 4F", 64, 64, 8, 2, "bf16", "swiglu",
     "atomic", [1, 17], {"shared": True, "shared_gate": True, "shared_slices": 4}),
    ("gelu f16 atomic gated-shared-fused split-K", 32, 256, 4, 2, "f16", "gelu",
     "atomic", [3], {"shared": True, "shared_gate": True, "result": "f32",
                     "tiles": "split-k-blocks=512", "addends": ["f32"]}),
    ("swiglu bf16 atomic gated-shared-fused BM=128", 64, 128, 8, 2, "bf16", "swiglu",
     "atomic", [40], {"shared": True, "shared_gate": True, "tiles": "tile-m=128"}),
    # f32 experts: tf32 mma.sync m16n8k8, each operand split into two tf32
    # values (3xTF32), h kept in f32; BK 16 by default (64 bytes a row, as
    # bf16's 32), the few-token set's BK 64, BM = 128 in dynamic shared
    # memory, biases, a fused shared expert, explicit tiles.
    ("swiglu f32 atomic", 32, 48, 8, 2, "f32", "swiglu", "atomic", [1, 40],
     {"addends": ["f32"]}),
    ("geglu f32 gather", 64, 64, 4, 2, "f32", "geglu", "gather", [17],
     {"addends": ["bf16"]}),
    ("gelu f32 none tiles", 32, 64, 4, 2, "f32", "gelu", "none", [23],
     {"tiles": "tile-m=32 tile-n-gate-up=32 tile-n-down=16 tile-k=32 stages=2"}),
    ("clamped bias f32 atomic", 32, 48, 8, 2, "f32", "swiglu_clamped", "atomic",
     [9], {"biases": "gud", "limit": 0.75, "result": "bf16"}),
    ("swiglu f32 atomic few-token BK=64 shared-fused", 64, 512, 4, 2, "f32",
     "swiglu", "atomic", [1, 3], {"tiles": "split-k-blocks=512", "shared": True}),
    ("gelu f32 atomic BM=128", 64, 64, 4, 1, "f32", "gelu", "atomic", [70],
     {"tiles": "tile-m=128"}),
    # Grouped block order (group-m): blocks walk G row tiles x every column
    # block; G = 3 fixed (groups of 3, 3, 2 row tiles), and from the grid
    # at run time (ceil(14 / 4) = 4: 4, 4, 4, 2), two gate_up column blocks;
    # and the plain order (group-m=1).
    ("swiglu bf16 atomic group-m=3", 64, 128, 4, 2, "bf16", "swiglu", "atomic",
     [100], {"tiles": "group-m=3", "addends": ["f32"]}),
    ("gelu f16 gather grouped", 64, 128, 4, 2, "f16", "gelu", "gather", [300], {}),
    ("swiglu bf16 group-m=1 none", 64, 128, 4, 2, "bf16", "swiglu", "none", [100],
     {"tiles": "group-m=1"}),
    # A shared expert as convert-moe-experts-to-gpu rewrites it: one expert,
    # K = 1 (every token's slot 0 names it; this case also has -1 slots).
    ("shared expert E=1 K=1 bf16 swiglu, combine none", 32, 48, 1, 1, "bf16", "swiglu", "none",
     [1, 40], {}),
    # input_scale (Llama 4's scale_input): gate_up scales a routed pair's
    # gate and up sums by its weight before the biases; the combine has no
    # weights (down and reduce take 1); a fused shared expert's pairs are
    # not scaled. (experts-emulate-scale-input.test runs these; their names
    # avoid the substrings experts-emulate.test's mutation runs select by.)
    ("scale-input swiglu-bf16-atomic shared-fused", 64, 64, 8, 1, "bf16", "swiglu",
     "atomic", [1, 40], {"scale_input": True, "shared": True, "addends": ["f32"]}),
    ("scale-input geglu-bf16-gather biases", 32, 48, 4, 2, "bf16", "geglu", "gather",
     [17], {"scale_input": True, "biases": "gud"}),
    ("scale-input gelu-f16-none", 32, 32, 4, 2, "f16", "gelu", "none", [9],
     {"scale_input": True}),
    ("scale-input swiglu-bf16-atomic split-K", 64, 512, 8, 2, "bf16", "swiglu",
     "atomic", [1], {"scale_input": True, "tiles": "split-k-blocks=512",
                     "biases": "gud"}),
    ("scale-input swiglu-f32-atomic", 32, 32, 4, 2, "f32", "swiglu", "atomic", [7],
     {"scale_input": True}),
    ("scale-input swiglu-bf16-atomic wgmma", 64, 64, 4, 1, "bf16", "swiglu", "atomic",
     [33], {"scale_input": True, "shared": True,
            "tiles": "chip=sm_90a wgmma=1 tile-k=16"}),
    # The combine's bias (JetMoE's bias after the mixture): gate_up's
    # accumulator initialisation (atomic) or reduce (gather) adds it to
    # every row, after the addends. (experts-emulate-combine-bias.test runs
    # these.)
    ("combine-bias swiglu-bf16-atomic shared-fused", 64, 64, 8, 2, "bf16", "swiglu",
     "atomic", [1, 40], {"bias": "bf16", "shared": True, "addends": ["f32"]}),
    ("combine-bias geglu-f16-gather", 32, 48, 4, 2, "f16", "geglu", "gather",
     [17], {"bias": "f32", "addends": ["f16"]}),
    ("combine-bias swiglu-f32-atomic-f32", 32, 32, 4, 2, "f32", "swiglu", "atomic",
     [7], {"bias": "f32"}),
    ("combine-bias swiglu-bf16-atomic split-K", 64, 512, 8, 2, "bf16", "swiglu",
     "atomic", [1], {"bias": "bf16", "tiles": "split-k-blocks=512"}),
]

# f32: the kernels keep h in f32 and multiply by 3xTF32 (products to about
# 2^-21 relative; plain tf32 gives ~1e-3 here and fails).
TOL = {"bf16": 1e-2, "f16": 2e-3, "f32": 2e-5}


def rnd_vals(rng, n, scale, dt):
    return [round_to(rng.uniform(-scale, scale), dt) for _ in range(n)]


def make_case(spec, T, rng):
    name, H, F, E, K, dt, actk, comb, _, extra = spec
    off = extra.get("offset", 0)
    c = {"H": H, "F": F, "E": E, "K": K, "dt": dt, "act": actk, "combine": comb,
         "T": T, "offset": off}
    c["x"] = [rnd_vals(rng, H, 1.0, dt) for _ in range(T)]
    gated = actk in ("swiglu", "geglu", "swiglu_clamped")
    s_in, s_f = 2.0 / math.sqrt(H), 2.0 / math.sqrt(F)
    c["up"] = [[rnd_vals(rng, H, s_in, dt) for _ in range(F)] for _ in range(E)]
    c["gate"] = [[rnd_vals(rng, H, s_in, dt) for _ in range(F)] for _ in range(E)] \
        if gated else None
    c["down"] = [[rnd_vals(rng, F, s_f, dt) for _ in range(H)] for _ in range(E)]
    ids = list(range(E + 2 * off))
    idx, w = [], []
    for t in range(T):
        row = rng.sample(ids, K)
        r = rng.random()
        if t % 5 == 3 or r < 0.1:
            row[rng.randrange(K)] = -1       # a slot that selects nothing
        if t % 7 == 5:
            row = [-1] * K                    # a token with no expert at all
        idx.append(row)
        w.append([0.0 if i < 0 else f32(rng.uniform(0.1, 1.0)) for i in row])
    c["idx"], c["w"] = idx, w
    c["addend_types"] = extra.get("addends", [])
    c["addends"] = [[rnd_vals(rng, H, 0.5, at) for _ in range(T)]
                    for at in c["addend_types"]]
    c["result"] = extra.get("result", dt)
    c["tiles"] = extra.get("tiles", "")
    biases = extra.get("biases", "")
    c["gate_bias"] = [rnd_vals(rng, F, 0.5, dt) for _ in range(E)] \
        if "g" in biases else None
    c["up_bias"] = [rnd_vals(rng, F, 0.5, dt) for _ in range(E)] \
        if "u" in biases else None
    c["down_bias"] = [rnd_vals(rng, H, 0.5, dt) for _ in range(E)] \
        if "d" in biases else None
    c["alpha"] = extra.get("alpha", 1.702)
    c["limit"] = extra.get("limit", 7.0)
    c["scale_input"] = extra.get("scale_input", False)
    # The combine's bias (H, of this dtype), added to every row.
    c["bias_type"] = extra.get("bias")
    c["bias"] = rnd_vals(rng, H, 0.5, c["bias_type"]) if c["bias_type"] else None
    c["shared"] = None
    if extra.get("shared"):
        # Width F_s = slices x F (DeepSeek-V2: two shared experts of F).
        Fs = F * extra.get("shared_slices", 1)
        s_fs = 2.0 / math.sqrt(Fs)
        c["shared"] = {
            "F": Fs,
            "gate": [[rnd_vals(rng, H, s_in, dt) for _ in range(Fs)]] if gated else None,
            "up": [[rnd_vals(rng, H, s_in, dt) for _ in range(Fs)]],
            "down": [[rnd_vals(rng, Fs, s_fs, dt) for _ in range(H)]],
            # Qwen2-MoE's sigmoid gate row (1 x H): g_t = sigmoid(x_t . w_s).
            "gate_weight": rnd_vals(rng, H, 2.0 * s_in, dt)
            if extra.get("shared_gate") else None}
    return c


def source(c):
    H, F, E, K, dt = c["H"], c["F"], c["E"], c["K"], c["dt"]
    gated = c["act"] in ("swiglu", "geglu", "swiglu_clamped")
    sig = ["%%x: tensor<?x%dx%s>" % (H, dt), "%%i: tensor<?x%dxi32>" % K]
    wts = []
    if gated:
        sig.append("%%g: tensor<%dx%dx%dx%s>" % (E, F, H, dt))
        wts.append("gate(%%g : tensor<%dx%dx%dx%s>)" % (E, F, H, dt))
    sig.append("%%u: tensor<%dx%dx%dx%s>" % (E, F, H, dt))
    wts.append("up(%%u : tensor<%dx%dx%dx%s>)" % (E, F, H, dt))
    sig.append("%%d: tensor<%dx%dx%dx%s>" % (E, H, F, dt))
    wts.append("down(%%d : tensor<%dx%dx%dx%s>)" % (E, H, F, dt))
    for key, n, dim in (("gate_bias", "gb", F), ("up_bias", "ub", F),
                        ("down_bias", "db", H)):
        if c[key] is not None:
            sig.append("%%%s: tensor<%dx%dx%s>" % (n, E, dim, dt))
            wts.append("%s(%%%s : tensor<%dx%dx%s>)" % (key, n, E, dim, dt))
    attrs = "activation = #moe.activation<%s>" % c["act"]
    if c["act"] == "swiglu_clamped":
        attrs += ", alpha = %r : f64, limit = %r : f64" % (c["alpha"], c["limit"])
    if c["offset"]:
        attrs += ", expert_offset = %d : i64" % c["offset"]
    slots = "tensor<?x%dx%dxf32>" % (K, H)
    # The weights: the combine's, or (input_scale) the experts' input scales.
    if c["combine"] != "none" or c["scale_input"]:
        sig.append("%%w: tensor<?x%dxf32>" % K)
    if c["scale_input"]:
        wts.append("input_scale(%%w : tensor<?x%dxf32>)" % K)
    body = ("  %%s = moe.experts %%x, %%i %s {%s}\n      : tensor<?x%dx%s>, "
            "tensor<?x%dxi32> -> %s\n" % (" ".join(wts), attrs, H, dt, K, slots))
    if c["combine"] == "none":
        res = slots
        body += "  return %%s : %s\n" % slots
    else:
        names, types = [], []
        for j, at in enumerate(c["addend_types"]):
            sig.append("%%a%d: tensor<?x%dx%s>" % (j, H, at))
            names.append("%%a%d" % j)
            types.append("tensor<?x%dx%s>" % (H, at))
        if c["shared"]:
            # A shared expert's FFN (its f32 output an addend, as the
            # decomposition makes it), F_s wide.
            Fs = c["shared"]["F"]
            sw = []
            if gated:
                sig.append("%%sg: tensor<%dx%dx%s>" % (Fs, H, dt))
                sw.append("gate(%%sg : tensor<%dx%dx%s>)" % (Fs, H, dt))
            sig.append("%%su: tensor<%dx%dx%s>" % (Fs, H, dt))
            sw.append("up(%%su : tensor<%dx%dx%s>)" % (Fs, H, dt))
            sig.append("%%sd: tensor<%dx%dx%s>" % (H, Fs, dt))
            sw.append("down(%%sd : tensor<%dx%dx%s>)" % (H, Fs, dt))
            if c["shared"]["gate_weight"] is not None:
                sig.append("%%sgw: tensor<1x%dx%s>" % (H, dt))
                sw.append("gate_weight(%%sgw : tensor<1x%dx%s>)" % (H, dt))
            body += ("  %%sh = moe.ffn %%x %s {activation = #moe.activation<%s>} : "
                     "tensor<?x%dx%s> -> tensor<?x%dxf32>\n" %
                     (" ".join(sw), c["act"], H, dt, H))
            names.append("%sh")
            types.append("tensor<?x%dxf32>" % H)
        adds = ["%s : %s" % (", ".join(names), ", ".join(types))] if names else []
        res = "tensor<?x%dx%s>" % (H, c["result"])
        weights = "" if c["scale_input"] else "weights(%%w : tensor<?x%dxf32>) " % K
        bias = ""
        if c["bias"] is not None:
            sig.append("%%b: tensor<%dx%s>" % (H, c["bias_type"]))
            bias = " bias(%%b : tensor<%dx%s>)" % (H, c["bias_type"])
        body += ("  %%y = moe.combine %sslots(%%s : %s)"
                 "%s%s : %s\n  return %%y : %s\n" %
                 (weights, slots, (" addends(%s)" % ", ".join(adds)) if adds else "",
                  bias, res, res))
    return "func.func @layer(%s) -> %s {\n%s}\n" % (", ".join(sig), res, body)


def host_args(c):
    T, H, F, E, K, dt = c["T"], c["H"], c["F"], c["E"], c["K"], c["dt"]

    def flat(m):
        out = []
        for r in m:
            out.extend(flat(r) if isinstance(r[0], list) else r)
        return out
    args = [Buf("x", [T, H], dt, data=flat(c["x"]) if T else []),
            Buf("indices", [T, K], "i32", data=flat(c["idx"]) if T else [])]
    if c["gate"] is not None:
        args.append(Buf("gate", [E, F, H], dt, data=flat(c["gate"])))
    args.append(Buf("up", [E, F, H], dt, data=flat(c["up"])))
    args.append(Buf("down", [E, H, F], dt, data=flat(c["down"])))
    for key, dim in (("gate_bias", F), ("up_bias", F), ("down_bias", H)):
        if c[key] is not None:
            args.append(Buf(key, [E, dim], dt, data=flat(c[key])))
    if c["combine"] != "none" or c["scale_input"]:
        args.append(Buf("weights", [T, K], "f32", data=flat(c["w"]) if T else []))
    if c["combine"] != "none":
        for j, at in enumerate(c["addend_types"]):
            args.append(Buf("addend%d" % j, [T, H], at,
                            data=flat(c["addends"][j]) if T else []))
        if c["shared"]:
            Fs = c["shared"]["F"]
            if c["shared"]["gate"] is not None:
                args.append(Buf("shared_gate", [Fs, H], dt, data=flat(c["shared"]["gate"])))
            args.append(Buf("shared_up", [Fs, H], dt, data=flat(c["shared"]["up"])))
            args.append(Buf("shared_down", [H, Fs], dt, data=flat(c["shared"]["down"])))
            if c["shared"]["gate_weight"] is not None:
                args.append(Buf("shared_gate_weight", [1, H], dt,
                                data=c["shared"]["gate_weight"]))
        if c["bias"] is not None:
            args.append(Buf("bias", [H], c["bias_type"], data=c["bias"]))
    return args


def run_case(moe_opt, spec, T, seed, mutations):
    c = make_case(spec, T, random.Random("%s/%d/%d" % (spec[0], T, seed)))
    opts = "combine=%s" % c["combine"]
    if c["tiles"]:
        opts += " " + c["tiles"]
    # The linear pass forms the kernel of a gated shared expert's logits.
    res = subprocess.run([moe_opt, "--convert-moe-experts-to-gpu=%s" % opts,
                          "--convert-moe-linear-to-gpu",
                          "--mlir-print-op-generic"], input=source(c),
                         capture_output=True, text=True)
    left = [o for o in ("experts", "ffn", "linear", "route", "combine")
            if '"moe.%s"' % o in res.stdout]
    if res.returncode != 0 or left:
        return None, "moe-opt: " + (res.stderr.strip() or
                                    "not converted: moe." + ", moe.".join(left))
    ir = res.stdout
    for kind, a, b in mutations:
        if kind == "mutate":
            if a not in ir:
                return None, "mutation: %r not in the IR" % a
            ir = ir.replace(a, b)
        elif kind == "mutate-re":
            ir, n = re.subn(a, b, ir)
            if not n:
                return None, "mutation: no match for %r" % a
        else:
            ir = ir.replace(a, "\0").replace(b, a).replace("\0", b)
    emu = Emulator(ir, seed)
    (out,) = emu.run_host("layer", host_args(c))
    got = out.data
    if any(v is None for v in got):
        return None, "result elements never written: %d" % sum(v is None for v in got)
    ref = reference(c, round_h=False)
    ref_h = reference(c, round_h=True)

    def rel(a, b):
        num = math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b)))
        den = math.sqrt(sum(y * y for y in b))
        return num / den if den else num
    info = {"err": rel(got, ref), "err_h": rel(got, ref_h),
            "launches": launch_names(emu),
            "maxabs": max([abs(x - y) for x, y in zip(got, ref)] or [0.0])}
    if "clamps" in c:
        n = c["clamps"]
        info["launches"].append("(clamped: g %d%%, u %d%% of %d)" % (
            100 * n[0] // n[2], 100 * n[1] // n[2], n[2]))
    if any(math.isnan(v) for v in got):
        return info, "NaN in the result"
    return info, None



def main():
    argv = sys.argv[1:]
    moe_opt = argv[0]
    seed, only, skip, mutations = 1, None, None, []
    i = 1
    while i < len(argv):
        if argv[i] == "--seed":
            seed = int(argv[i + 1])
            i += 2
        elif argv[i] == "--only":
            only = argv[i + 1]
            i += 2
        elif argv[i] == "--skip":
            skip = argv[i + 1]
            i += 2
        elif argv[i] in ("--mutate", "--swap", "--mutate-re"):
            mutations.append((argv[i][2:], argv[i + 1], argv[i + 2]))
            i += 3
        else:
            raise SystemExit("experts-emulate: unknown argument " + argv[i])
    passed = failed = 0
    for spec in CASES:
        if (only and only not in spec[0]) or \
                (skip and any(s in spec[0] for s in skip.split(","))):
            continue
        for T in spec[8]:
            name = "%s H=%d F=%d E=%d K=%d T=%d" % (spec[0], spec[1], spec[2], spec[3],
                                                     spec[4], T)
            try:
                info, err = run_case(moe_opt, spec, T, seed, mutations)
            except EmuError as e:
                info, err = None, "emulation error: %s" % e
            if err is None:
                # The input's tolerance, or the result's where it is
                # coarser (an f32 layer with a bf16 combine result).
                tol = max(TOL[spec[5]], TOL[spec[9].get("result", spec[5])])
                if info["err"] > tol:
                    err = "relative L2 error %.3g > %g" % (info["err"], tol)
            if err:
                failed += 1
                print("FAIL %s: %s" % (name, err))
            else:
                passed += 1
                print("ok   %s: rel L2 %.2g (vs h rounded like the kernel %.2g), "
                      "max abs %.2g; %s" % (name, info["err"], info["err_h"],
                                            info["maxabs"], " ".join(info["launches"])))
            sys.stdout.flush()
    print("experts-emulate: %d cases passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
