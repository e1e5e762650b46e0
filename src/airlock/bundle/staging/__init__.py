"""The staging (online) side of a bundle: sources -> collect -> hash -> plan volumes -> write -> sign (``pack``)."""
