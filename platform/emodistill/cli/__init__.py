"""Command-line interface: `emodistill <command>` (thin; the work lives in the library)."""
