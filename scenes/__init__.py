"""Scene bundles shipped with latentscape (the demo among them)."""
