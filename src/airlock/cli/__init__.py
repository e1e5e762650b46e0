"""The command line: a thin shell that parses flags, calls the core and renders with rich."""
