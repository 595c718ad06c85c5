"""Portal pages of the backup app: contracts and their negotiation (contracts.py), runs (runs.py)."""
