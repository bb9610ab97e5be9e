"""Solvers: market clearing (closed form and on menus), the exact oracle, and baselines."""

from .constraints import Constraints, make_constraints
from .envelope import clear_menu
from .market import clear
from .menus import Menu, best_of_k_menu, budget_grid, menu_from_curve
from .oracle import solve_oracle
from .result import STATUS_INFEASIBLE, STATUS_NOT_SCARCE, STATUS_OK, Allocation

__all__ = [
    "STATUS_INFEASIBLE",
    "STATUS_NOT_SCARCE",
    "STATUS_OK",
    "Allocation",
    "Constraints",
    "Menu",
    "best_of_k_menu",
    "budget_grid",
    "clear",
    "clear_menu",
    "make_constraints",
    "menu_from_curve",
    "solve_oracle",
]
