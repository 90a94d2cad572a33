"""
Hostile input, protocol by protocol: each case checks the exact answer (status
code, close code, or a dropped connection) and then that the same server still
serves a normal client.
"""
