"""Scene bundles: a folder with ``scene.toml``, its assets and ``scene.lock``."""

from latentscape.scene.bundle import Scene, demo_scene_path, load_scene, save_trained_scene
from latentscape.scene.lock import verify_lock, write_lock

__all__ = ["Scene", "demo_scene_path", "load_scene", "save_trained_scene", "verify_lock", "write_lock"]
