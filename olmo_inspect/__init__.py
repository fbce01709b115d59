"""olmo-inspect: inspect, convert and diff OLMo checkpoints."""

__version__ = "0.1.0"
