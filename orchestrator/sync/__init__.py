"""Live two-way file sync between run directories and the desktop work folder, and the results store."""
