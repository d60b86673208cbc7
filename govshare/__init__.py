"""govshare: a data-exchange pipeline for the shared foundational databases (共享基础库).

source views -> connectors -> validation -> keys/protection -> sharing (versioned sets)
-> subscribers, with lineage and the access log beside every step.
"""

__version__ = "0.1.0"
