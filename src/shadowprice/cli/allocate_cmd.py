"""``shadowprice allocate`` (placeholder until the allocation core lands)."""
