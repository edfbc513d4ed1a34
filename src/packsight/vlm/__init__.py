"""The VLM layer: loading Qwen2-VL / Qwen2.5-VL, constrained answer decoding, tiny test models."""
