"""diffperf: performance regression suite for text-to-image diffusion inference.

Flow (one way): models -> recipes -> cases -> build -> measure -> record -> compare -> report.
"""
