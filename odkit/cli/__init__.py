"""Command-line interface: one module per verb, each exposing ``register(subparsers)``."""
