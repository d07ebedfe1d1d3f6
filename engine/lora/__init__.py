"""LoRA adapters: the file format, the targets they can adapt, and live swaps between frames."""

from latentscape.lora.format import LoraAdapter, load_adapter, parse_adapter, save_adapter
from latentscape.lora.manager import AdapterManager, build_adapters
from latentscape.lora.targets import linear_modules, register_target, resolve_target, target_names

__all__ = ["LoraAdapter", "load_adapter", "parse_adapter", "save_adapter", "AdapterManager", "build_adapters",
           "linear_modules", "register_target", "resolve_target", "target_names"]
