"""The router model: request parsing, the cascade over local (BLS) and remote tiers, hold-back streaming, metrics."""
