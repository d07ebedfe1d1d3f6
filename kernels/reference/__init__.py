"""Pure-torch references: they run everywhere and define correctness."""
