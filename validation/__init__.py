"""validation: judge every record by the standards (GB 11643, GB 32100, GB/T 36904, code lists).

Importing this package is light (no pandas, no Great Expectations); heavy imports happen in the
functions that need them.
"""
