"""The bundle format both sides share: layout, manifest, signatures, reader, frames, parity scheme, inventory."""
