"""The config-mode button daemon: one GPIO push button and one status LED.

A long press (or the button held at power-on, or a freshly flashed card) puts the device in
config mode, the only mode in which it pairs and takes settings; a short press, or the timeout,
returns it to production.  The package is a pure core (``press``: debouncing and press lengths,
``mode``: the mode machine and the LED choice, ``pattern``: LED rhythms) and a thin shell
(``line``: GPIO backends, ``led``: LED backends, ``daemon``: the loop).  See docs/button.md.
"""
