"""The settings applier: the one unit that turns signed settings into the device's running state
(docs/pairing.md, "Applying settings").  Not the network-facing agent: it runs as root, only in
config mode (and once at boot, to put the settings in effect again), and its only input is a
signed document it verifies itself."""
