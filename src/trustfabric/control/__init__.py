"""The control plane of a running floor: bootstrap (attested certificates), tokens, tables, push.

See ``README.md`` beside this file for the flows and endpoints.
"""
