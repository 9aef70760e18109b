"""Repair and learning methods. Each takes a pipeline and returns an adapter (a prompt-embedding
map, a LoRA, an encoder) that the shared generation and audit code consume."""
