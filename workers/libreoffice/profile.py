"""The security settings every LibreOffice profile starts from.

Every instance starts from this configuration, written into its profile before it starts (both
converters, first start or restart alike). A DOCX can point at URLs, and LibreOffice 7.4 follows
some of them whatever the load asks for; these settings are what stops it.
tests/workers/test_remote_content.py proves it against a local HTTP server. The warm converter
reads them back after each start and refuses to convert when one did not take
(``UnoConverter._check_settings``); tests patch them here to run a stock LibreOffice.
"""

from __future__ import annotations

from pathlib import Path

SECURITY = "/org.openoffice.Office.Common/Security/Scripting"
PROFILE_SETTINGS = (  # (node, property, value)
    # A picture linked by URL (a:blip r:link to a relationship with TargetMode="External") is
    # fetched when the page is laid out, even with UpdateDocMode NO_UPDATE: the link is not
    # "updated", the graphic is swapped in. This makes LibreOffice refuse to follow any link of
    # a document outside its trusted locations (SvtSecurityOptions::isUntrustedReferer), to the
    # network or to a local file ...
    (SECURITY, "BlockUntrustedRefererLinks", "true"),
    # ... and no location is trusted.
    (SECURITY, "SecureURL", ""),
    # No macro runs, even where a load does not say MacroExecutionMode (soffice --convert-to).
    (SECURITY, "DisableMacrosExecution", "true"),
    # Writer never updates links (0 always, 1 on request, 2 never), whatever the load says.
    ("/org.openoffice.Office.Writer/Content/Update", "Link", "2"),
)

# A shape filled with a picture linked by URL (a:blipFill in wps:spPr) is fetched even so: that
# graphic is loaded without asking whose link it is. So the content providers that reach the
# network are removed from the instance's UCB, and no URL of these schemes can be opened at all.
UCB_PROVIDERS = (
    "/org.openoffice.ucb.Configuration/ContentProviders/Local/SecondaryKeys/Office/ProviderData"
)
NETWORK_PROVIDERS = {  # node in UCB_PROVIDERS: the URL scheme it serves
    "Provider3": "http",
    "Provider12": "https",
    "Provider4": "vnd.sun.star.webdav",
    "Provider4a": "webdav",
    "Provider12a": "vnd.sun.star.webdavs",
    "Provider12b": "webdavs",
    "Provider6": "ftp",
    "Provider43": "vnd.libreoffice.cmis",
}

# Network schemes no provider serves in a plain install, but an extra one (such as the GIO
# provider of libreoffice-gnome) could: checked too, so that such an install is noticed.
OTHER_NETWORK_SCHEMES = ("smb", "sftp", "dav", "davs")


def write_profile_settings(profile_dir: Path) -> None:
    """Write the profile's user configuration (user/registrymodifications.xcu), replacing what
    LibreOffice left there, so that every start begins from exactly these settings."""
    properties = (
        f'<item oor:path="{node}"><prop oor:name="{name}" oor:op="fuse">'
        f"<value>{value}</value></prop></item>"
        for node, name, value in PROFILE_SETTINGS
    )
    removals = (
        f'<item oor:path="{UCB_PROVIDERS}"><node oor:name="{name}" oor:op="remove"/></item>'
        for name in NETWORK_PROVIDERS
    )
    user = profile_dir / "user"
    user.mkdir(parents=True, exist_ok=True)
    (user / "registrymodifications.xcu").write_text(
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<oor:items xmlns:oor="http://openoffice.org/2001/registry">\n'
        + "\n".join([*properties, *removals])
        + "\n</oor:items>\n",
        encoding="utf-8",
    )
