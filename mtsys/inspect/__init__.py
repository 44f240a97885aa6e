"""Inspecting a system: proto dumps, a per-task summary and Graphviz pictures.

Everything here reads a system and never writes it: `view.open_system` opens the store with its
writing methods disabled. The dump, summary and graph functions take a `mtsys.system.store.Store`
or an in-memory `SystemState` (what `Store.snapshot()` returns), so tests and notebooks can
inspect systems that were never written to disk.

- `dump.dump`: the whole SystemState (or one task's part of it) as text proto or JSON.
- `dump.summary` / `dump.format_summary`: per task quality, parameters, FLOPs, knowledge flow.
- `graphs.system_graph` / `graphs.knowledge_flow` / `graphs.render`: muNet Figures 2, 6-7 and
  µ2Net Figure 3 as Graphviz graphs, written as .svg, .png or .dot.
- `plots`: the papers' plots (matplotlib PNGs) of one or more systems.
- `cli_lib`: the sub-commands of `bin/inspect_system.py`.

Private tasks (visibility PRIVATE or GROUPS) and the components only they may use are left out
unless `include_private=True` (`view.SystemView`).
"""
