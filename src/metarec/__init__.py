"""metarec: LLM-understood, meta-learned recommendations for cold-start users and items."""

__version__ = "0.1.0"
