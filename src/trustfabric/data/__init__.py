"""The data vault: labels, envelope encryption, the key store and the key service (DESIGN.md "Data and environments")."""
