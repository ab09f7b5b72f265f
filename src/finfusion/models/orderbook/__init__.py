"""Models of limit-order-book windows `book` [B, T, L, 4]: TransLOB and its baselines."""
