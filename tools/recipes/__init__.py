"""Recipes: scripts that make scene assets and datasets (``python -m
latentscape.tools.recipes.<name>``): ``demo_layer`` (add a GAN-textured mesh layer to
a scene), ``make_adapter`` (train a LoRA look for a scene's colour MLP), ``synthetic``
(a procedural sphere dataset for tests and smoke runs). The Blender dataset recipe is
still ``latentscape.tools.demo_dataset`` / ``blender_views``.
"""
