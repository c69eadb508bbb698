"""What uses the product rather than is it: ``driftd bench``, ``driftd demo``, ``driftd report``.

May import anything in driftd, adapters included; nothing in driftd imports it but the CLI.
"""
