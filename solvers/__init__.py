"""Solver plugins: one module per solver here, one template folder per solver in templates/."""
