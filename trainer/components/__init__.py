"""Model components, each implemented once and composed from the architecture spec."""
