"""The closed event catalogue: every event type coalmine can emit, with a stable integer code.

Codes follow OpenCanary's ``logtype`` numbers wherever OpenCanary has the event, so SIEM
pipelines built for OpenCanary keep working; coalmine's own events take numbers OpenCanary does
not use: 11xx are raised by the device's agent, 12xx by the console about a device.  Codes are
never renumbered or reused.  ``docs/events.md`` lists the same table and a test keeps code, docs
and emitters in step.

``SOURCES`` says which codes each honeypot service may send: the agent knows which service sent
a datagram (one socket per service) and refuses any other code from it, so a compromised service
can neither forge another service's events nor the device-level ones (boot, drops, health).
"""

from __future__ import annotations

import enum


class EventCode(enum.IntEnum):
    """Stable event type codes (OpenCanary ``logtype`` compatible)."""

    BOOT = 1000  # device runtime started (agent start after boot or restart)
    HEARTBEAT = 1004  # device alive; kept as the device's last-seen time, not stored per beat
    EVENTS_DROPPED = 1101  # the persistent queue was full and events were dropped
    QUEUE_RESET = 1102  # the queue was unreadable at start: moved aside, a new one begun
    LISTENERS = 1103  # the device's listening sockets, at start and whenever they change
    CONFIG_MODE_ENTERED = 1104  # button daemon: config mode entered (button, power-on, first boot)
    CONFIG_MODE_LEFT = 1105  # button daemon: config mode left (button or timeout)
    BUTTON_PRESSED = 1106  # button daemon: a short press in production (someone at the box)
    PAIRING_REQUESTED = 1107  # agent: asked the console to pair (config mode), with fingerprint
    NETWORK_INTERFACES = 1108  # agent: the device's network interfaces, at start and on change
    SETTINGS_RECEIVED = 1109  # agent: signed settings fetched in config mode and verified
    SETTINGS_REFUSED = 1110  # agent: settings from the console refused, with the reason
    SETTINGS_APPLIED = 1111  # settings applier: a new version in effect (config mode)
    SETTINGS_NOT_APPLIED = 1112  # settings applier: refused, or applied and rolled back
    AGENT_RESTARTED = 1113  # agent: systemd restarted it (watchdog, crash): why its last run ended
    EVENTS_AGGREGATED = 1114  # agent: events of one source held back by flood control, counted
    MEMORY = 1115  # agent: the memory each coalmine unit holds (start, hourly, OOM kills)
    DEVICE_OFFLINE = 1200  # console: no heartbeat for three of the device's intervals
    DEVICE_ONLINE = 1201  # console: heartbeats again after DEVICE_OFFLINE
    DEVICE_STALLED = 1202  # console: the device's queue is not draining
    DEVICE_UNHEALTHY = 1203  # console: the device rejects, drops or cannot store events
    MESSAGE_UNDECODABLE = 1204  # console: an authentic message could not be read
    DEVICE_CLONED = 1205  # console: two counter streams under one device key
    DEVICE_PAIRED = 1206  # console: the operator approved the device's pairing request
    DEVICE_REVOKED = 1207  # console: the operator revoked the device; its beacons are dropped
    CONSOLE_STATE_ROLLED_BACK = 1208  # console: a device holds acks the console no longer has
    FTP_LOGIN_ATTEMPT = 2000
    HTTP_GET = 3000
    HTTP_POST_LOGIN = 3001
    HTTP_UNIMPLEMENTED_METHOD = 3002
    SSH_NEW_CONNECTION = 4000
    SSH_REMOTE_VERSION = 4001
    SSH_LOGIN_ATTEMPT = 4002
    SSH_PUBKEY_ATTEMPT = 4003  # coalmine: public-key attempt with key type and fingerprint
    SMB_FILE_OPEN = 5000
    PORT_SYN = 5001  # port scan: SYNs to closed ports, aggregated per source and window
    NMAP_OS = 5002
    NMAP_NULL = 5003
    NMAP_XMAS = 5004
    NMAP_FIN = 5005
    SMB_LOGIN_ATTEMPT = 5010  # coalmine: NTLMSSP session setup (user, domain, NTLMv2 response)
    SMB_TREE_CONNECT = 5011  # coalmine: a share connected
    TELNET_LOGIN_ATTEMPT = 6001
    MYSQL_LOGIN_ATTEMPT = 8001
    VNC_LOGIN_ATTEMPT = 12001  # VNC authentication: the DES challenge and response
    RDP_CONNECTION = 14001  # RDP: mstshash cookie, security protocols, NLA identity
    REDIS_COMMAND = 17001


DESCRIPTIONS: dict[EventCode, str] = {
    EventCode.BOOT: "device runtime started",
    EventCode.HEARTBEAT: "device heartbeat",
    EventCode.EVENTS_DROPPED: "events dropped: device queue was full",
    EventCode.QUEUE_RESET: "device event queue was unreadable and was reset",
    EventCode.LISTENERS: "device listening sockets",
    EventCode.CONFIG_MODE_ENTERED: "device entered config mode",
    EventCode.CONFIG_MODE_LEFT: "device left config mode",
    EventCode.BUTTON_PRESSED: "config button pressed in production mode",
    EventCode.PAIRING_REQUESTED: "device asked its console to pair",
    EventCode.NETWORK_INTERFACES: "device network interfaces (more than one: a second adapter)",
    EventCode.SETTINGS_RECEIVED: "device received signed settings in config mode",
    EventCode.SETTINGS_REFUSED: "device refused settings from its console",
    EventCode.SETTINGS_APPLIED: "device settings changed",
    EventCode.SETTINGS_NOT_APPLIED: "device settings not applied (refused or rolled back)",
    EventCode.EVENTS_AGGREGATED: "more events of the same kind from the same source (counted)",
    EventCode.MEMORY: "device memory: what each coalmine unit holds (OOM_KILLS: processes "
                      "killed at their memory limit)",
    EventCode.AGENT_RESTARTED: "device agent restarted after a hang or a crash: events it "
                               "held in memory may be lost",
    EventCode.DEVICE_OFFLINE: "device offline: heartbeats stopped",
    EventCode.DEVICE_ONLINE: "device back online",
    EventCode.DEVICE_STALLED: "device stalled: its events are not getting out",
    EventCode.DEVICE_UNHEALTHY: "device unhealthy: events rejected, dropped or not stored",
    EventCode.MESSAGE_UNDECODABLE: "an authentic message from the device could not be read",
    EventCode.DEVICE_CLONED: "device key used by two counter streams: cloned or restored card",
    EventCode.DEVICE_PAIRED: "device paired: the operator approved it",
    EventCode.DEVICE_REVOKED: "device revoked by the operator",
    EventCode.CONSOLE_STATE_ROLLED_BACK: "console state went back (a restored state directory): "
                                         "recorded traffic may have been accepted again",
    EventCode.FTP_LOGIN_ATTEMPT: "FTP login attempt",
    EventCode.HTTP_GET: "HTTP page request",
    EventCode.HTTP_POST_LOGIN: "HTTP login attempt",
    EventCode.HTTP_UNIMPLEMENTED_METHOD: "HTTP request with an unimplemented method",
    EventCode.SSH_NEW_CONNECTION: "SSH new connection",
    EventCode.SSH_REMOTE_VERSION: "SSH remote version",
    EventCode.SSH_LOGIN_ATTEMPT: "SSH password login attempt",
    EventCode.SSH_PUBKEY_ATTEMPT: "SSH public key login attempt",
    EventCode.SMB_FILE_OPEN: "SMB file opened",
    EventCode.PORT_SYN: "port scan: connection attempts to closed ports",
    EventCode.NMAP_OS: "port scan: nmap OS detection probes",
    EventCode.NMAP_NULL: "port scan: TCP NULL probes",
    EventCode.NMAP_XMAS: "port scan: TCP XMAS probes",
    EventCode.NMAP_FIN: "port scan: TCP FIN probes",
    EventCode.SMB_LOGIN_ATTEMPT: "SMB login attempt",
    EventCode.SMB_TREE_CONNECT: "SMB share connected",
    EventCode.TELNET_LOGIN_ATTEMPT: "Telnet login attempt",
    EventCode.MYSQL_LOGIN_ATTEMPT: "MySQL login attempt",
    EventCode.VNC_LOGIN_ATTEMPT: "VNC login attempt",
    EventCode.RDP_CONNECTION: "RDP connection attempt",
    EventCode.REDIS_COMMAND: "Redis command (AUTH: a login attempt)",
}

# Which codes each service may hand to the agent (its ``event_codes`` must match).
SOURCES: dict[str, frozenset[EventCode]] = {
    "button": frozenset({EventCode.CONFIG_MODE_ENTERED, EventCode.CONFIG_MODE_LEFT,
                         EventCode.BUTTON_PRESSED}),
    "ftp": frozenset({EventCode.FTP_LOGIN_ATTEMPT}),
    "http": frozenset({EventCode.HTTP_GET, EventCode.HTTP_POST_LOGIN,
                       EventCode.HTTP_UNIMPLEMENTED_METHOD}),
    "https": frozenset({EventCode.HTTP_GET, EventCode.HTTP_POST_LOGIN,
                        EventCode.HTTP_UNIMPLEMENTED_METHOD}),
    "mysql": frozenset({EventCode.MYSQL_LOGIN_ATTEMPT}),
    "portscan": frozenset({EventCode.PORT_SYN, EventCode.NMAP_OS, EventCode.NMAP_NULL,
                           EventCode.NMAP_XMAS, EventCode.NMAP_FIN}),
    "rdp": frozenset({EventCode.RDP_CONNECTION}),
    "redis": frozenset({EventCode.REDIS_COMMAND}),
    "smb": frozenset({EventCode.SMB_LOGIN_ATTEMPT, EventCode.SMB_TREE_CONNECT,
                      EventCode.SMB_FILE_OPEN}),
    "settings": frozenset({EventCode.SETTINGS_APPLIED, EventCode.SETTINGS_NOT_APPLIED}),
    "ssh": frozenset({EventCode.SSH_NEW_CONNECTION, EventCode.SSH_REMOTE_VERSION,
                      EventCode.SSH_LOGIN_ATTEMPT, EventCode.SSH_PUBKEY_ATTEMPT}),
    "telnet": frozenset({EventCode.TELNET_LOGIN_ATTEMPT}),
    "vnc": frozenset({EventCode.VNC_LOGIN_ATTEMPT}),
}

# Codes no device ever sends: the console's own events about a device, and the heartbeat (kept as
# the device's last-seen time).  The console refuses them in a device's message.
CONSOLE_ONLY = frozenset({EventCode.HEARTBEAT, *(c for c in EventCode if 1200 <= c < 1300)})

# logdata keys that hold secrets: masked by default wherever events are shown to people.
SECRET_KEYS = frozenset({"PASSWORD", "NTLMV2_RESPONSE", "SCRAMBLE", "VNC_CLIENT_RESPONSE",
                         "VNC_PASSWORD"})
