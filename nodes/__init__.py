"""ComfyUI adapters of the pack: node schemas and hook installation. The math is in gag_core."""
