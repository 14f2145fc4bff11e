"""
What every mode shares on a connection: line splitting, limits, the idle
watch, tokens and peer addresses.
"""
