"""The allocation solvers as they were before the speed work, kept verbatim as a test oracle.

Copied from ``src/shadowprice/{allocate.py,solve/{market,envelope,menus,leftover,constraints}.py}``
at commit 849cdfd (only the imports changed: unchanged modules come from the package). The
faster solvers must give bit-identical budgets; ``tests/test_allocate_speed_equivalence.py``
compares them on the existing scenarios and on random instances.
"""

from .allocate import allocate

__all__ = ["allocate"]
