"""Speech helpers shared by the kinds that speak (text normalization, …)."""
