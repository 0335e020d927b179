"""Command-line tools that sit beside the package (importable by the tests as `tools.<name>`)."""
