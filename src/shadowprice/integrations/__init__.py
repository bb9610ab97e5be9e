"""Bridges to other systems, each an optional extra imported only from its own module.

* :mod:`shadowprice.integrations.ray` — allocate a Ray Data dataset across its blocks and
  hand the budgets to Ray Data LLM processors (``pip install 'shadowprice[ray]'``).

Importing this package imports none of them.
"""
