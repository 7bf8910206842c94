"""processes layer of terramind-openeo (see docs/ and ../shared/DESIGN.md)."""
