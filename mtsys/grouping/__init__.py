"""Task grouping (Standley et al. 2020, "Which tasks should be learned together in multi-task
learning?"): given tasks and an inference-cost budget, which networks to train on which tasks.

Candidate networks (one per task subset, plus half-size single-task ones) each report a loss per
task they solve and a cost; `selection` chooses the set of candidates of total cost <= budget
that serves every task with the least summed loss, proven optimal for every budget of a sweep
(a dynamic program over task subsets, `selection_kernel`). `candidates_csv` reads candidate
tables; `cli_lib` holds the sub-commands of `bin/group_tasks.py`.

Submodules are imported by name (`from mtsys.grouping import selection`); this package imports
nothing, so importing one of them stays light (no TensorFlow).
"""
