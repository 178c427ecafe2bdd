"""For the hostile-input ledger: callback URLs that aim a worker at the deployment itself.

Every one must be refused with 422 when a job is submitted (with QUIRE_WEBHOOK_ALLOW_PRIVATE
unset), and refused again, without connecting, if one reaches a worker.
tests/app/test_webhook_targets.py runs them through the API.

None needs DNS: each host is an address literal in some spelling, or ``localhost``, which
/etc/hosts answers.
"""

from __future__ import annotations


def ssrf_callback_urls() -> list[str]:
    """(Each is refused with 422 at submission.)"""
    return [
        # The four of issue 12: Redis, the cloud metadata service, PostgreSQL, the API itself.
        "http://127.0.0.1:6379/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]:5432/",
        "http://0x7f000001:8000/",
        # Loopback spelled the ways inet_aton (and so resolvers and HTTP clients) accept.
        "http://2130706433/",
        "http://0177.0.0.1/",
        "http://127.1/",
        "http://0x7f.1/",
        "http://017700000001/",
        "http://127.255.255.254:8000/",
        "http://localhost:8000/",
        "http://LOCALHOST:8000/",
        "http://user:password@127.0.0.1:6379/",
        "https://127.0.0.1/",
        # Unspecified: connecting to 0.0.0.0 or :: reaches this machine.
        "http://0/",
        "http://0.0.0.0:8000/",
        "http://[::]:8000/",
        # Private, shared, link-local, multicast, reserved, broadcast.
        "http://10.0.0.1/",
        "http://172.16.0.1/",
        "http://192.168.1.1/",
        "http://100.64.0.1/",
        "http://169.254.0.1/",
        "http://192.0.0.8/",
        "http://224.0.0.1/",
        "http://240.0.0.1/",
        "http://255.255.255.255/",
        "http://198.18.0.1/",
        # IPv6: unique-local, link-local (with a zone), site-local, multicast.
        "http://[fc00::1]/",
        "http://[fd12:3456:789a::1]/",
        "http://[fe80::1]/",
        "http://[fe80::1%25eth0]/",
        "http://[fec0::1]/",
        "http://[ff02::1]/",
        # IPv4 inside IPv6: mapped, compatible, 6to4, NAT64 (the metadata service's address).
        "http://[::ffff:127.0.0.1]:6379/",
        "http://[::ffff:7f00:1]/",
        "http://[::ffff:a9fe:a9fe]/",
        "http://[::127.0.0.1]/",
        "http://[2002:7f00:1::]/",
        "http://[64:ff9b::a9fe:a9fe]/",
    ]
