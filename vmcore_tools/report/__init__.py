"""Layer 8, presentation: the report tables, pictures, the HTML report and snapshots."""
