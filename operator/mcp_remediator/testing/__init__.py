"""What the tests and the demo share: the API emulator, real daemons, the operator thread.

Never imported by the operator itself; needs the ``test`` or ``demo`` extra (kmock).
"""
