"""Reading reports after the fact: comparison and charts."""
