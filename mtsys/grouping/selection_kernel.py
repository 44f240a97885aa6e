r"""The exact search behind `mtsys.grouping.selection`: a dynamic program over task subsets.

Networks m solve task sets M(m) with loss L(m, t) and cost c(m) (integer grid units). Serving
each task by its best chosen network splits the tasks into disjoint *blocks*, each served by one
network solving all of it. Conversely, blocks P_1..P_r with a
network m_i >= P_i each cost at most sum c(m_i) and lose at most sum_i sum_{t in P_i} L(m_i, t)
(a task's best chosen network is at least as good as its block's). So the optimum over network
sets equals the optimum over *partitions* of the tasks into blocks, a block P of cost class c
being worth F_c[P] = min over networks m of class c with P <= M(m) of sum_{t in P} L(m, t).
A block no better than a cheaper class's block of the same tasks is dropped.

Singleton classes. A class whose networks each solve one task (the half-size singles) only makes
one-task blocks; it stays out of the subset DP, which then runs on the grid of the other
("group") classes: unit u = their costs' gcd (2 grid units for SNT costs {0.5, 1}, halving the
rows). With H the tasks served by singleton-class networks,

    best(k) = min over H <= T, k1 <= k:  h[H][k1] + g[T \ H][(k - k1) // u]

where h[H][k1] is the least loss of serving H's tasks by singleton-class networks within k1 (a
knapsack). H runs over all 2^n subsets in counting order, h's rows for the high tasks kept on a
stack (two rows redone per subset on average); only the k1 where h[H] drops are tried.

Dynamic program. g[S][j] = the least loss of a partition of S into group blocks of total cost
<= j (units u). Every partition of a non-empty S has exactly one block P holding S's lowest task
and the rest partitions S \ P, so

    g[{}][j] = 0,   g[S][j] = min over P <= S with low(S) in P, class c <= j:
                               F_c[P] + g[S \ P][j - c]

enumerates every partition exactly once; with the combination, best(k) is the proven optimum at
every budget k at once. A partition of S has at most |S| blocks, so g[S][j] is constant from
j = |S| cmax on: rows stop there (or at the largest budget) and are read past their end as their
last entry. Rows are filled by task count (the rows read are final), those of one count in
parallel.

Cost. Block table: sum over networks of 2^|M(m)| (3^n for all subsets); DP: 3^n / 2 pairs
(P, S \ P), each a vectorised min over one row of <= min(K, n cmax) + 1 entries per group class;
combination: 2^n rows of K + 1 per drop of h[H] (one per singleton class). Memory: the rows,
sum_S (min(K, |S| cmax) + 1) floats (92 MB at n = 20 on the SNT grid), and 2^n blocks per class.
A budget's answer is read back by redoing the minimisations along the chosen blocks.

The kernels are written once in the Python that numba compiles: `engine="numba"` runs them
compiled, `engine="python"` runs the very same functions in the interpreter (slow; for small n
and to check the compiled code).
"""

from __future__ import annotations

import dataclasses
import functools
import time

import numpy as np

try:
  import numba
  prange = numba.prange  # range when called from the interpreter
except ImportError:  # numba is optional: the interpreter runs the same code, slowly
  numba = None
  prange = range

ENGINES = ("auto", "numba", "python")
# "auto" compiles from this many tasks on; below, the interpreter is faster than the compile.
AUTO_NUMBA_MIN_TASKS = 11


def _block_table_kernel(masks, classes, losses, num_threads, ctz, best, arg, sums, subs):
  """Per-thread block tables: best[th, P, c] = F_c[P] over networks th, th + T, ...

  Enumerates the subsets of each network's task set by a compressed index i in [1, 2^|M|):
  the subset of i drops i's lowest bit from the subset of i & (i - 1), so its loss is one add.
  """
  n = losses.shape[1]
  num = masks.shape[0]
  for th in prange(num_threads):
    bitpos = np.empty(n, np.int64)
    for m in range(th, num, num_threads):
      mask = masks[m]
      c = classes[m]
      size = 0
      for t in range(n):
        if (mask >> t) & 1:
          bitpos[size] = t
          size += 1
      sums[th, 0] = 0.0
      subs[th, 0] = 0
      for i in range(1, 1 << size):
        prev = i & (i - 1)
        t = bitpos[ctz[i]]
        value = sums[th, prev] + losses[m, t]
        block = subs[th, prev] | (1 << t)
        sums[th, i] = value
        subs[th, i] = block
        if value < best[th, block, c]:
          best[th, block, c] = value
          arg[th, block, c] = m


def _dp_kernel(order, layer_start, offsets, caps, class_units, blocks, g):
  """Fills g (rows at `offsets`, row S of length caps[S] + 1) by the recursion of the module doc."""
  num_classes = class_units.shape[0]
  inf = np.inf
  g[offsets[0]] = 0.0  # the empty set: cap 0, loss 0
  for layer in range(1, layer_start.shape[0] - 1):
    for idx in prange(layer_start[layer], layer_start[layer + 1]):
      s = order[idx]
      cap = caps[s]
      acc = np.full(cap + 1, inf)  # S's row, apart from g: the compiler sees no aliasing
      rest = s ^ (s & -s)
      r = rest
      while True:
        p = s ^ r
        row_r = offsets[r]
        cap_r = caps[r]
        for ci in range(num_classes):
          f = blocks[p, ci]
          c = class_units[ci]
          if f == inf or c > cap:
            continue
          top = min(cap, cap_r + c)
          length = top + 1 - c
          dst = acc[c:top + 1]  # slices and a select: the form LLVM vectorises
          src = g[row_r:row_r + length]
          for j in range(length):
            v = f + src[j]
            a = dst[j]
            dst[j] = v if v < a else a
          if top < cap:
            last = f + g[row_r + cap_r]
            for k in range(top + 1, cap + 1):
              a = acc[k]
              acc[k] = last if last < a else a
        if r == 0:
          break
        r = (r - 1) & rest
      row = offsets[s]
      for k in range(cap + 1):
        g[row + k] = acc[k]


def _reconstruct_kernel(full, k, offsets, caps, class_units, blocks, g, out_blocks, out_classes):
  """Writes the blocks (masks, classes) of an optimal partition of `full` within k; returns how
  many. Redoes `_dp_kernel`'s minimisation, taking the first (P, c) equal to the stored optimum
  (the same float operations give the same value)."""
  num_classes = class_units.shape[0]
  s = full
  count = 0
  while s != 0:
    row = offsets[s]
    kk = min(k, caps[s])
    target = g[row + kk]
    while kk > 0 and g[row + kk - 1] == target:  # the cheapest budget with the same optimum
      kk -= 1
    rest = s ^ (s & -s)
    r = rest
    found = False
    while not found:
      p = s ^ r
      for ci in range(num_classes):
        f = blocks[p, ci]
        c = class_units[ci]
        if f == np.inf or c > kk:
          continue
        if f + g[offsets[r] + min(kk - c, caps[r])] == target:
          out_blocks[count] = p
          out_classes[count] = ci
          count += 1
          s = r
          k = kk - c
          found = True
          break
      if not found:
        if r == 0:
          return -1  # unreachable when g was filled by _dp_kernel
        r = (r - 1) & rest
  return count


def _combine_kernel(opt_units, opt_loss, unit, offsets, caps, g, best, arg_h, arg_k1, rows):
  """best[k] = min over H, k1 of h[H][k1] + g[T - H][(k - k1) // unit] (module doc), with the
  first (H, k1) reaching it; `rows` [n + 1, K + 1] is the stack of h's rows for the high tasks.

  opt_units/opt_loss [n, m]: each task's singleton-class options (inf loss: none).
  """
  n = opt_units.shape[0]
  top = best.shape[0] - 1
  inf = np.inf
  full = (1 << n) - 1
  for k in range(top + 1):
    best[k] = inf
    rows[n, k] = 0.0
  for h in range(1 << n):
    low = n - 1  # rows[i] = h[H restricted to tasks >= i]; redo those below the changed bits
    if h != 0:
      low = 0
      while not (h >> low) & 1:
        low += 1
    for i in range(low, -1, -1):
      if (h >> i) & 1:
        for k in range(top + 1):
          value = inf
          for o in range(opt_units.shape[1]):
            c = opt_units[i, o]
            if c <= k:
              v = opt_loss[i, o] + rows[i + 1, k - c]
              if v < value:
                value = v
          rows[i, k] = value
      else:
        for k in range(top + 1):
          rows[i, k] = rows[i + 1, k]
    rest = full ^ h
    row = offsets[rest]
    cap = caps[rest]
    previous = inf
    for k1 in range(top + 1):
      first = rows[0, k1]
      if first < previous:  # h[H] drops at k1: the only k1 worth trying
        previous = first
        for k in range(k1, top + 1):
          v = first + g[row + min((k - k1) // unit, cap)]
          if v < best[k]:
            best[k] = v
            arg_h[k] = h
            arg_k1[k] = k1


@functools.lru_cache(maxsize=None)
def _compiled():
  """The numba-compiled kernels (compiled lazily on first use, once per process)."""
  if numba is None:
    raise ImportError("engine='numba' needs numba (see requirements.txt)")
  return (numba.njit(parallel=True, nogil=True)(_block_table_kernel),
          numba.njit(parallel=True, nogil=True)(_dp_kernel),
          numba.njit(nogil=True)(_combine_kernel),
          numba.njit(nogil=True)(_reconstruct_kernel))


def _kernels(engine: str):
  if engine == "numba":
    return _compiled()
  return _block_table_kernel, _dp_kernel, _combine_kernel, _reconstruct_kernel


def resolve_engine(engine: str, num_tasks: int) -> str:
  """The engine `engine` means for `num_tasks` tasks ("auto": numba when installed and useful)."""
  if engine not in ENGINES:
    raise ValueError(f"Unknown engine {engine!r}; expected one of {list(ENGINES)}")
  if engine == "auto":
    return "numba" if numba is not None and num_tasks >= AUTO_NUMBA_MIN_TASKS else "python"
  return engine


def warm_up() -> float:
  """Compiles the numba kernels (on a 2-task instance); returns the seconds it took."""
  start = time.perf_counter()
  masks = np.array([1, 2, 3], np.int64)
  table = solve(2, masks, np.array([0, 0, 1], np.int64), np.array([1, 2], np.int64),
                np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]]), 4, engine="numba")
  table.blocks_at(4)
  return time.perf_counter() - start


@dataclasses.dataclass(frozen=True)
class Table:
  """The filled tables of one instance (names of the module doc); `optimum` and `blocks_at`
  read answers. best[k]: the optimum at k <= max_units grid units, reached by (arg_h, arg_k1);
  group_*: the group classes' costs (in u), blocks and networks ([2^n, G]); opt_*: [n, m] each
  task's singleton-class costs, losses and networks."""

  num_tasks: int
  max_units: int
  best: np.ndarray
  arg_h: np.ndarray
  arg_k1: np.ndarray
  unit: int
  group_units: np.ndarray
  group_blocks: np.ndarray
  group_arg: np.ndarray
  offsets: np.ndarray
  caps: np.ndarray
  g: np.ndarray
  opt_units: np.ndarray
  opt_loss: np.ndarray
  opt_arg: np.ndarray
  engine: str

  def optimum(self, units: int) -> float:
    """The optimal total loss at a budget of `units` grid units (inf: nothing covers)."""
    return float(self.best[min(units, self.max_units)])

  def min_cover_units(self) -> int | None:
    """The least budget (grid units, up to max_units) at which every task is covered."""
    finite = np.flatnonzero(np.isfinite(self.best))
    return int(finite[0]) if finite.size else None

  def blocks_at(self, units: int) -> list[tuple[int, int]]:
    """An optimal partition at `units`: (network row, task mask) per block.

    Among partitions with the optimal loss it has the least cost: the budget is first lowered
    to the least one with the same optimum (a cheaper equally good answer would contradict
    that), and so is each sub-budget along the way.
    """
    k = min(units, self.max_units)
    while k > 0 and self.best[k - 1] == self.best[k]:
      k -= 1
    if not np.isfinite(self.best[k]):
      raise ValueError(f"No partition within {units} units")
    n = self.num_tasks
    h, k1 = int(self.arg_h[k]), int(self.arg_k1[k])
    rest = ((1 << n) - 1) ^ h
    reconstruct = _kernels(self.engine)[3]
    out_blocks = np.zeros(max(n, 1), np.int64)
    out_classes = np.zeros(max(n, 1), np.int64)
    count = reconstruct(rest, (k - k1) // self.unit, self.offsets, self.caps, self.group_units,
                        self.group_blocks, self.g, out_blocks, out_classes)
    if count < 0:
      raise RuntimeError("selection_kernel: reconstruction lost the optimum (a bug)")
    chosen = [(int(self.group_arg[out_blocks[i], out_classes[i]]), int(out_blocks[i]))
              for i in range(count)]
    return chosen + self._singletons(h, k1)

  def _singletons(self, h: int, k1: int) -> list[tuple[int, int]]:
    """The singleton-class networks serving H = h within k1: the knapsack redone, backwards."""
    n, options = self.num_tasks, range(self.opt_units.shape[1])
    rows = np.full((n + 1, k1 + 1), np.inf)
    rows[n] = 0.0
    for i in range(n - 1, -1, -1):
      rows[i] = rows[i + 1]
      for k in range(k1 + 1 if (h >> i) & 1 else 0):
        rows[i, k] = min([self.opt_loss[i, o] + rows[i + 1, k - self.opt_units[i, o]]
                          for o in options if self.opt_units[i, o] <= k] + [np.inf])
    chosen, k = [], k1
    for i in (i for i in range(n) if (h >> i) & 1):
      o = next(o for o in options if self.opt_units[i, o] <= k and
               self.opt_loss[i, o] + rows[i + 1, k - self.opt_units[i, o]] == rows[i, k])
      chosen.append((int(self.opt_arg[i, o]), 1 << i))
      k -= self.opt_units[i, o]
    return chosen


def solve(num_tasks: int, masks: np.ndarray, classes: np.ndarray, class_units: np.ndarray,
          losses: np.ndarray, max_units: int, *, engine: str = "auto") -> Table:
  """Fills the block table, the DP and the combination for budgets 0..max_units grid units.

  Args:
    num_tasks: n (at most 30; the tables have 2^n rows).
    masks: [N] int64 task set of each network (bit t: task t).
    classes: [N] int64 cost class of each network, an index into `class_units`.
    class_units: [C] int64 the classes' costs in grid units, ascending, all >= 1.
    losses: [N, n] float64 L(m, t); only entries inside the masks are read.
    max_units: the largest budget to answer, in grid units.
    engine: "numba", "python" or "auto" (`resolve_engine`).

  Returns:
    The filled `Table`.
  """
  n = num_tasks
  engine = resolve_engine(engine, n)
  block_kernel, dp_kernel, combine_kernel, _ = _kernels(engine)
  blocks, arg = _block_table(n, masks, classes, class_units, losses, engine, block_kernel)
  sizes = np.bitwise_count(np.arange(1 << n, dtype=np.int64)).astype(np.int64)
  singleton = np.array([not np.isfinite(blocks[sizes != 1, ci]).any()
                        for ci in range(class_units.size)], bool)
  group = np.flatnonzero(~singleton)
  unit = int(np.gcd.reduce(class_units[group])) if group.size else 1
  group_units = (class_units[group] // unit).astype(np.int64)
  group_blocks = np.ascontiguousarray(blocks[:, group])
  group_arg = np.ascontiguousarray(arg[:, group])
  cmax = int(class_units.max())
  max_units = int(min(max_units, n * cmax))
  group_max = max_units // unit
  caps = np.minimum(sizes * (int(group_units.max()) if group.size else 0), group_max)
  offsets = np.zeros((1 << n) + 1, np.int64)
  np.cumsum(caps + 1, out=offsets[1:])
  order = np.argsort(sizes, kind="stable").astype(np.int64)
  layer_start = np.searchsorted(sizes[order], np.arange(n + 2)).astype(np.int64)
  g = np.empty(int(offsets[-1]))
  dp_kernel(order, layer_start, offsets, caps, group_units, group_blocks, g)

  single = np.flatnonzero(singleton)
  bits = np.int64(1) << np.arange(n, dtype=np.int64)
  opt_units = np.repeat(class_units[single][None, :], n, axis=0).astype(np.int64)
  opt_loss = np.ascontiguousarray(blocks[bits][:, single])
  opt_arg = arg[bits][:, single]
  best = np.empty(max_units + 1)
  arg_h = np.full(max_units + 1, -1, np.int64)
  arg_k1 = np.full(max_units + 1, -1, np.int64)
  combine_kernel(opt_units, opt_loss, unit, offsets, caps, g, best, arg_h, arg_k1,
                 np.empty((n + 1, max_units + 1)))
  return Table(num_tasks=n, max_units=max_units, best=best, arg_h=arg_h, arg_k1=arg_k1,
               unit=unit, group_units=group_units, group_blocks=group_blocks,
               group_arg=group_arg, offsets=offsets, caps=caps, g=g, opt_units=opt_units,
               opt_loss=opt_loss, opt_arg=opt_arg, engine=engine)


def _block_table(n, masks, classes, class_units, losses, engine, block_kernel):
  """F_c[P] and its networks ([2^n, C]), classes that are not cheaper-or-better dropped."""
  num_classes = class_units.shape[0]
  num_threads = numba.get_num_threads() if engine == "numba" else 1
  width = int(np.bitwise_count(masks).max()) if masks.size else 0
  idx = np.arange(1 << width, dtype=np.int64)
  ctz = np.zeros(1 << width, np.int64)
  ctz[1:] = np.log2(idx[1:] & -idx[1:]).astype(np.int64)
  # [thread, block, class]: a block's classes share a cache line in the DP's random reads.
  best = np.full((num_threads, 1 << n, num_classes), np.inf)
  arg = np.full((num_threads, 1 << n, num_classes), -1, np.int32)
  block_kernel(masks, classes, np.ascontiguousarray(losses, np.float64), num_threads, ctz,
               best, arg, np.empty((num_threads, 1 << width)),
               np.empty((num_threads, 1 << width), np.int64))
  blocks, which = best[0].copy(), arg[0].copy()
  for th in range(1, num_threads):  # merged: least loss, ties to the lowest network row
    take = (best[th] < blocks) | ((best[th] == blocks) & (arg[th] >= 0) & (arg[th] < which))
    blocks[take] = best[th][take]
    which[take] = arg[th][take]
  cheapest = np.full(1 << n, np.inf)
  for ci in range(num_classes):
    dominated = blocks[:, ci] >= cheapest
    cheapest = np.minimum(cheapest, blocks[:, ci])
    blocks[dominated, ci] = np.inf
    which[dominated, ci] = -1
  return blocks, which
