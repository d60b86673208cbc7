"""validation: judge every record by the standards (GB 11643, GB 32100, GB/T 36904, code lists).

The vocabulary of check names a catalog may use lives on the ground floor (``common.checks``).

- ``identifiers``: vectorised identifier checks, normalisation and check characters.
- ``codes``: code lists and GB/T 2260 division codes.
- ``rules``: the rules a dataset's catalog entry implies, and their row masks.
- ``engine``: the ``Validator`` (good / rejected batches, per-rule counts, the run's summary).
- ``gx_suite`` / ``gx_expectations``: the Great Expectations suite per dataset, counts only;
  ``gx_worker`` runs it in a child process, ``gx_mode`` says where (GOVSHARE_GX).
- ``gate``: the validation gate's judgement of a run; ``quarantine``: rejected rows and their cases.
- ``quality``: the quality feedback (数据质量反馈) for the provider; ``crossref``: cross-dataset checks.

Importing this package is light (no pandas, no Great Expectations); heavy imports happen in the
functions that need them.
"""
