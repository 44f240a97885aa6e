"""Which variables a signature reads, proven from its graph rather than trusted.

A concrete function reaches a variable only through a resource handle it captures. This walks
the function's GraphDef from those captured handles to the ops that read them (ReadVariableOp,
ResourceGather, ...), following handles into nested functions (PartitionedCall, If, While,
Case) by argument position. The result is the set of variables some op of the signature can
read: a task's signature must read exactly its own path's variables.
"""

from __future__ import annotations

from typing import Iterable, Mapping

import tensorflow as tf

_PASS_THROUGH = frozenset({"Identity"})  # IdentityN etc. count as reads
# Op -> (attrs naming the called functions, index of the first input passed to them).
_CALLS = {
    "PartitionedCall": (("f",), 0),
    "StatefulPartitionedCall": (("f",), 0),
    "If": (("then_branch", "else_branch"), 1),
    "StatelessIf": (("then_branch", "else_branch"), 1),
    "While": (("cond", "body"), 0),
    "StatelessWhile": (("cond", "body"), 0),
    "Case": (("branches",), 1),
    "StatelessCase": (("branches",), 1),
}


def variables_read(function, labelled: Iterable[tuple[tf.Variable, str]]) -> set[str]:
  """The labels of the variables that `function` (a ConcreteFunction) can read.

  Args:
    function: A ConcreteFunction (in process, or a loaded SavedModel's signature).
    labelled: (variable, label) pairs, e.g. (variable, id of the component that owns it).

  Raises:
    ValueError: the function captures a resource handle that is none of the variables (it could
      read state this audit cannot name).
  """
  by_handle = {id(v.handle): label for v, label in labelled}
  graph_def = function.graph.as_graph_def()
  library = {f.signature.name: f for f in graph_def.library.function}
  resources = {}
  for external, internal in function.graph.captures:
    if external.dtype != tf.resource:
      continue
    name = by_handle.get(id(external))
    if name is None:
      raise ValueError(f"Signature function {function.name} captures resource "
                       f"{internal.op.name}, which is not a variable of the export.")
    resources[internal.op.name] = name
  reads: set[str] = set()
  _walk(graph_def.node, resources, library, reads, set())
  return reads


def _source(input_name: str) -> str:
  return input_name.lstrip("^").split(":")[0]


def _handles(node, resources: Mapping[str, str]) -> list:
  return [(i, resources[_source(x)]) for i, x in enumerate(node.input)
          if not x.startswith("^") and _source(x) in resources]


def _walk(nodes, resources: Mapping[str, str], library, reads: set, seen: set) -> None:
  nodes = list(nodes)
  resources = dict(resources)
  changed = True
  while changed:  # FunctionDef nodes come in no set order: follow Identity aliases to a fixpoint
    changed = False
    for node in nodes:
      if node.op in _PASS_THROUGH and node.name not in resources:
        handles = _handles(node, resources)
        if handles:
          resources[node.name] = handles[0][1]
          changed = True
  for node in nodes:
    handles = _handles(node, resources)
    if not handles or node.op in _PASS_THROUGH:
      continue
    if node.op in _CALLS:
      attrs, first = _CALLS[node.op]
      for attr in attrs:
        value = node.attr[attr]
        names = [f.name for f in value.list.func] if value.list.func else [value.func.name]
        for fname in names:
          fdef = library[fname]
          args = {fdef.signature.input_arg[i - first].name: name
                  for i, name in handles if i >= first}
          key = (fname, tuple(sorted(args.items())))
          if key not in seen:
            seen.add(key)
            _walk(fdef.node_def, args, library, reads, seen)
    else:
      # A read op, or any other consumer that could read the handle: counted (conservative).
      reads.update(name for _, name in handles)
