"""Pieces every stage shares, below all of them: atomic file I/O and full-disk errors (:mod:`.fileio`),
wire value types (:mod:`.types`), a thread pool (:mod:`.threads`) and the progress protocol
(:mod:`.progress`). Nothing here imports a stage."""
