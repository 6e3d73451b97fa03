"""CLI commands, one module per command group; each imports its heavy dependencies lazily."""
