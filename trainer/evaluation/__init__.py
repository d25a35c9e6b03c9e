"""Evaluation beyond perplexity: task sets and the scorers that judge replies."""
