"""Setup shared by every test folder."""

import signal

# A test run started in the background (nohup, `command &` in a script) inherits SIGINT ignored;
# Python then installs no KeyboardInterrupt handler, and the processes the tests start inherit the
# ignored signal too. The Ctrl-C tests need it: restore Python's default handler (a handler is reset
# to the default in started processes, where an ignored signal would stay ignored).
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
